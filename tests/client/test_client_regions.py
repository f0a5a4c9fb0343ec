"""Regions from the SDK and the command line: masks and label maps reach the server, and what
the client can judge without the pictures' pixels it refuses before sending."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from styleserve import AsyncClient, Client, InvalidArgument, Regions

from tests.client.client_helpers import CONTENT_SIZE, cli_command

# A port nothing listens on: the checks below fail before any call is made.
NOWHERE = "127.0.0.1:9"


def _mask(path: Path, columns: slice) -> Path:
    """A white band of ``columns`` on black, at twice the content's size (its aspect ratio)."""
    pixels = np.zeros((CONTENT_SIZE[1] * 2, CONTENT_SIZE[0] * 2), np.uint8)
    pixels[:, columns] = 255
    Image.fromarray(pixels, "L").save(path)
    return path


@pytest.fixture
def halves(tmp_path: Path) -> tuple[Path, Path]:
    width = CONTENT_SIZE[0] * 2
    return (
        _mask(tmp_path / "left.png", slice(0, width // 2)),
        _mask(tmp_path / "right.png", slice(width // 2, width)),
    )


@pytest.fixture
def second_style(tmp_path: Path) -> Path:
    path = tmp_path / "blue.png"
    Image.new("RGB", (48, 48), (20, 40, 230)).save(path)
    return path


def test_stylize_with_regions_keeps_what_no_mask_holds(
    server, content, style, second_style, tmp_path
):
    left = _mask(tmp_path / "left.png", slice(0, 32))
    middle = _mask(tmp_path / "middle.png", slice(32, 80))
    with Client(server.target, timeout=120) as client:
        result = client.stylize(
            content, [style, second_style], regions=Regions(style_masks=[left, middle]), size=64,
            iterations=3, region_border=4.0,
        )  # fmt: skip
    painted = np.asarray(result.image(), dtype=np.int16)
    kept = np.asarray(Image.open(content).convert("RGB"), dtype=np.int16)
    # The content is 64x32, the output too: the last 24 columns (the masks' last 48) are kept.
    assert painted.shape == kept.shape
    np.testing.assert_array_equal(painted[:, 40:], kept[:, 40:])
    assert result.options.region_border == 4.0


async def test_the_async_client_sends_a_label_map(server, content, style, second_style, tmp_path):
    label_map = tmp_path / "labels.png"
    colours = np.zeros((CONTENT_SIZE[1], CONTENT_SIZE[0], 3), np.uint8)
    colours[:, :32] = (255, 0, 0)
    colours[:, 32:] = (0, 0, 255)
    Image.fromarray(colours, "RGB").save(label_map)
    regions = Regions(label_map=label_map, style_colors=["#ff0000", 0x0000FF])
    async with AsyncClient(server.target, timeout=120) as client:
        result = await client.stylize(
            content, [style, second_style], regions=regions, size=64, iterations=3
        )
    assert result.image().size == CONTENT_SIZE


@pytest.mark.parametrize(
    ("regions", "styles", "options", "said"),
    [
        (Regions(), 2, {}, "regions: send one style mask"),
        (
            Regions(style_masks=["m.png"]),
            2,
            {},
            "regions.style_masks: send one mask per style picture (2), got 1",
        ),
        (
            Regions(style_masks=["m.png", "m.png"], label_map="l.png"),
            2,
            {},
            "regions.label_map: send style_masks or a label_map, not both",
        ),
        (
            Regions(label_map="l.png", style_colors=[0xFF0000]),
            2,
            {},
            "regions.style_colors: give one colour",
        ),
        (
            Regions(label_map="l.png", style_colors=["red", 1]),
            2,
            {},
            "regions.style_colors[0]: name a colour as RRGGBB",
        ),
        (Regions(style_masks=["m.png", "m.png"], keep_color=0), 2, {}, "regions.keep_color:"),
        (
            Regions(style_masks=["m.png", "m.png"]),
            2,
            {"style_blend": [1.0, 2.0]},
            "style_blend: with regions",
        ),
    ],
)
def test_what_the_client_can_judge_it_refuses_before_sending(
    regions, styles, options, said, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name in ("m.png", "l.png", "c.png", "s.png"):
        Image.new("RGB", (8, 8)).save(name)
    with Client(NOWHERE) as client, pytest.raises(InvalidArgument) as info:
        client.stylize("c.png", ["s.png"] * styles, regions=regions, **options)
    assert info.value.details.startswith(said), info.value.details


def test_the_cli_paints_with_style_masks(server, content, style, second_style, halves, tmp_path):
    out = tmp_path / "out.png"
    done = subprocess.run(
        cli_command(
            "stylize", str(content), str(style), str(second_style), "-o", str(out),
            "--style-mask", str(halves[0]), "--style-mask", str(halves[1]),
            "--region-border", "2", "--size", "48", "--iterations", "3",
            "--server", server.target, "--quiet",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (48, 24)


def test_the_cli_names_a_region_mistake(content, style, second_style, halves, tmp_path):
    args = ["stylize", str(content), str(style), str(second_style), "-o", str(tmp_path / "o.png")]
    one_mask = subprocess.run(
        cli_command(*args, "--style-mask", str(halves[0]), "--server", NOWHERE),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert one_mask.returncode == 1
    assert "INVALID_ARGUMENT: regions.style_masks: send one mask per style picture (2), got 1" in (
        one_mask.stderr
    )
    bad_colour = subprocess.run(
        cli_command(*args, "--label-map", str(halves[0]), "--style-color", "blue"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad_colour.returncode == 2
    assert "--style-color: name a colour as RRGGBB hex digits" in bad_colour.stderr
