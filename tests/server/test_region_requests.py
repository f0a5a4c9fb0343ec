"""Regions over a real loopback server: masks and label maps in both tiers, with registered
styles, and every bad region refused as INVALID_ARGUMENT naming the field before any job.

The content is ``picture()`` (48x32); masks come at other resolutions of its aspect ratio, to
show that they are resized to the output.
"""

from __future__ import annotations

import io
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import connect, encoded, picture, request

pytestmark = pytest.mark.timeout(300)

RED, BLUE, GREEN, GREY = 0xFF0000, 0x0000FF, 0x00FF00, 0x808080
STYLES = [encoded(picture((40, 40)), "JPEG"), encoded(picture((40, 40), "L").convert("RGB"))]
INSTANT = {"preset": "instant", "size": 96}


def mask(size: tuple[int, int] = (96, 64), box: tuple[int, int, int, int] | None = None) -> bytes:
    """A black PNG of ``size`` with the white ``box`` (x0, y0, x1, y1), in fractions of a
    hundred of the size (None: all white)."""
    image = Image.new("L", size, 0 if box is not None else 255)
    if box is not None:
        w, h = size
        image.paste(
            255, (box[0] * w // 100, box[1] * h // 100, box[2] * w // 100, box[3] * h // 100)
        )
    return encoded(image)


LEFT, RIGHT = mask(box=(0, 0, 50, 100)), mask(box=(50, 0, 100, 100))


def label_map(*colors: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """Vertical bands of ``colors``, equally wide."""
    image = Image.new("RGB", size)
    band = size[0] // len(colors)
    for i, color in enumerate(colors):
        image.paste(
            ((color >> 16) & 255, (color >> 8) & 255, color & 255), (i * band, 0, size[0], size[1])
        )
    return encoded(image)


def with_regions(job: pb.StyleTransferRequest, **regions: Any) -> pb.StyleTransferRequest:
    job.regions.CopyFrom(pb.Regions(**regions))
    return job


def job(**regions: Any) -> pb.StyleTransferRequest:
    """A FAST job with the two STYLES and ``regions`` (Regions fields; pictures as bytes)."""
    fields = {
        name: [pb.Image(data=m) for m in value] if name == "style_masks" else value
        for name, value in regions.items()
    }
    for name in ("label_map", "keep_mask"):
        if name in fields:
            fields[name] = pb.Image(data=fields[name])
    return with_regions(request(styles=STYLES), **fields)


def pixels(result: pb.Result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.image.data)).convert("RGB"), dtype=np.int16)


def result_of(stub: Any, message: pb.StyleTransferRequest) -> pb.Result:
    return list(stub.StyleTransfer(message, timeout=120))[-1].result


def blended() -> pb.StyleTransferRequest:
    message = job(style_masks=[LEFT, RIGHT])
    message.styles[1].blend_weight = 2.0
    return message


def nine_masks() -> pb.StyleTransferRequest:
    return job(style_masks=[LEFT] * 9)


def empty_regions() -> pb.StyleTransferRequest:
    message = request(styles=STYLES)
    message.regions.SetInParent()
    return message


BAD = [
    ("aspect", lambda: job(style_masks=[LEFT, mask((64, 64))]), "regions.style_masks[1]", "aspect"),
    (
        "empty",
        lambda: job(style_masks=[mask(box=(0, 0, 0, 0)), RIGHT]),
        "regions.style_masks[0]",
        "no pixel",
    ),
    (
        "overlap",
        lambda: job(style_masks=[LEFT, mask()]),
        "regions.style_masks[1]",
        "overlaps style_masks[0]",
    ),
    (
        "more masks",
        lambda: job(style_masks=[LEFT, RIGHT, LEFT]),
        "regions.style_masks",
        "(2), got 3",
    ),
    ("fewer masks", lambda: job(style_masks=[LEFT]), "regions.style_masks", "(2), got 1"),
    ("more masks than any request", nine_masks, "regions.style_masks", "at most 8"),
    (
        "undecodable",
        lambda: job(style_masks=[b"not a picture" * 10, RIGHT]),
        "regions.style_masks[0]",
        "PNG",
    ),
    (
        "keep overlaps",
        lambda: job(
            style_masks=[LEFT, mask(box=(50, 0, 80, 100))], keep_mask=mask(box=(70, 0, 100, 100))
        ),
        "regions.keep_mask",
        "overlaps style_masks[1]",
    ),
    (
        "keep colour with masks",
        lambda: job(style_masks=[LEFT, RIGHT], keep_color=GREEN),
        "regions.keep_color",
        "label_map",
    ),
    (
        "both ways",
        lambda: job(style_masks=[LEFT, RIGHT], label_map=label_map(RED, BLUE)),
        "regions.label_map",
        "not both",
    ),
    ("neither way", empty_regions, "regions", "style mask"),
    (
        "colour with no style",
        lambda: job(label_map=label_map(RED, BLUE, GREEN), style_colors=[RED, BLUE]),
        "regions.label_map",
        "#00ff00",
    ),
    (
        "colours per style",
        lambda: job(label_map=label_map(RED, BLUE), style_colors=[RED]),
        "regions.style_colors",
        "got 1",
    ),
    (
        "colour on no pixel",
        lambda: job(label_map=label_map(RED, GREY), style_colors=[RED, BLUE]),
        "regions.style_colors[1]",
        "no pixel",
    ),
    (
        "colour out of range",
        lambda: job(label_map=label_map(RED, BLUE), style_colors=[1 << 24, BLUE]),
        "regions.style_colors[0]",
        "0xRRGGBB",
    ),
    (
        "repeated colour",
        lambda: job(label_map=label_map(RED, BLUE), style_colors=[RED, RED]),
        "regions.style_colors[1]",
        "repeats",
    ),
    (
        "keep colour is a style's",
        lambda: job(label_map=label_map(RED, BLUE), style_colors=[RED, BLUE], keep_color=BLUE),
        "regions.keep_color",
        "style_colors[1]",
    ),
    (
        "keep mask with a map",
        lambda: job(label_map=label_map(RED, BLUE), style_colors=[RED, BLUE], keep_mask=LEFT),
        "regions.keep_mask",
        "keep_color",
    ),
    ("blended", blended, "styles[1].blend_weight", "blended"),
    (
        "border",
        lambda: with_regions(
            request(styles=STYLES, region_border=100.0),
            style_masks=[pb.Image(data=LEFT), pb.Image(data=RIGHT)],
        ),
        "options.region_border",
        "64",
    ),
]


def test_every_bad_region_is_invalid_argument_before_any_job(server):
    with connect(server.target) as stub:
        for name, make, field, words in BAD:
            events: list[str] = []
            with pytest.raises(grpc.RpcError) as info:
                for response in stub.StyleTransfer(make(), timeout=60):
                    events.append(str(response.WhichOneof("event")))
            error = info.value
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert error.details().startswith(f"{field}: "), (name, error.details())
            assert words in error.details(), (name, error.details())
            # Refused before it queued: no Queued, no Started.
            assert events == [], name
        assert list(stub.StyleTransfer(job(style_masks=[LEFT, RIGHT]), timeout=120))[-1].result
    metrics = server.server.metrics.registry
    # One job ran (the good one at the end): 3 iterations in each of its 2 stages at most.
    assert metrics.get_sample_value("styleserve_iterations_total") <= 6


def test_instant_regions_are_each_style_s_own_picture_away_from_the_border(server):
    """Left half, a quarter, and the last quarter kept: beyond the border (8 pixels) from an
    edge, each region is exactly the picture its style alone gives, and the keep region is
    exactly the content."""
    # Two styles far apart for the feed-forward pair: a red and a blue picture.
    styles = [encoded(Image.new("RGB", (40, 40), c)) for c in ((255, 0, 0), (0, 0, 255))]
    with connect(server.target) as stub:
        alone = [pixels(result_of(stub, request(styles=[s], **INSTANT))) for s in styles]
        halves = pixels(result_of(stub, with_regions(
            request(styles=styles, **INSTANT),
            style_masks=[pb.Image(data=LEFT), pb.Image(data=mask(box=(50, 0, 75, 100)))],
        )))  # fmt: skip
    assert halves.shape == alone[0].shape == (64, 96, 3)
    np.testing.assert_array_equal(halves[:, :40], alone[0][:, :40])
    np.testing.assert_array_equal(halves[:, 56:63], alone[1][:, 56:63])
    content = np.asarray(picture().resize((96, 64), Image.Resampling.BICUBIC), dtype=np.int16)
    np.testing.assert_array_equal(halves[:, 72:], content[:, 72:])
    # Within the border the two styles meet, neither wholly.
    seam = halves[:, 48]
    assert (seam != alone[0][:, 48]).any() and (seam != alone[1][:, 48]).any()


def test_complementary_masks_halved_by_the_resize_paint_every_pixel(server):
    # 33 white rows of 64 over a 32-row output: its row 16 is half of each mask (127.5, which
    # rounds to 128 in both); it was refused as an overlap. The earlier style takes it.
    top = Image.new("L", (96, 64), 0)
    top.paste(255, (0, 0, 96, 33))
    bottom = Image.eval(top, lambda level: 255 - level)
    halves = [pb.Image(data=encoded(top)), pb.Image(data=encoded(bottom))]
    overlapping = Image.new("L", (96, 64), 0)
    overlapping.paste(255, (0, 30, 96, 64))
    with connect(server.target) as stub:
        halved = {**INSTANT, "size": 48}
        done = result_of(stub, with_regions(request(styles=STYLES, **halved), style_masks=halves))
        assert pixels(done).shape == (32, 48, 3)
        refused = with_regions(
            request(styles=STYLES, **halved),
            style_masks=[halves[0], pb.Image(data=encoded(overlapping))],
        )
        with pytest.raises(grpc.RpcError) as overlap:
            list(stub.StyleTransfer(refused, timeout=60))
    assert overlap.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "overlaps style_masks[0]" in overlap.value.details()


def test_a_label_map_paints_its_regions_and_keeps_the_keep_colour(server):
    with connect(server.target) as stub:
        result = result_of(
            stub,
            job(label_map=label_map(RED, BLUE, GREEN), style_colors=[RED, BLUE], keep_color=GREEN),
        )
    painted = pixels(result)
    assert painted.shape == (21, 32, 3)  # FAST: size 32
    content = np.asarray(picture().resize((32, 21), Image.Resampling.BICUBIC), dtype=np.int16)
    # The last third keeps the content (its columns from 22 on are the map's green).
    np.testing.assert_array_equal(painted[:, 22:], content[:, 22:])
    assert np.abs(painted[:, :10] - content[:, :10]).mean() > 1


def test_a_registered_style_paints_regions_as_its_pictures_do(start_server):
    regions = {"style_masks": [pb.Image(data=LEFT), pb.Image(data=RIGHT)]}
    with start_server() as srv, connect(srv.target) as stub:
        direct = result_of(stub, with_regions(request(styles=STYLES, seed=3), **regions))
        registration = pb.RegisterStyleRequest(
            styles=[pb.StylePicture(image=pb.Image(data=s)) for s in STYLES],
            options=pb.StyleOptions(size=32, precision=pb.PRECISION_FLOAT32),
        )
        style_id = stub.RegisterStyle(registration, timeout=60).style_id
        named = request(styles=[], seed=3)
        named.style_id = style_id
        by_id = result_of(stub, with_regions(named, **regions))
        instant = request(styles=[], **INSTANT)
        instant.style_id = style_id
        instant_by_id = result_of(stub, with_regions(instant, **regions))
        fewer = request(styles=[], seed=3)
        fewer.style_id = style_id
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.StyleTransfer(
                    with_regions(fewer, style_masks=[pb.Image(data=LEFT)]), timeout=60
                )
            )
    assert by_id.image.data == direct.image.data
    assert instant_by_id.width == 96
    assert info.value.details().startswith(
        "regions.style_masks: send one mask per style picture (2)"
    )
