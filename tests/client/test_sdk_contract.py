"""One source of truth: the client defers ranges to the server's limits, every option has a
flag and a wire field, and the CLI plans a job as the server does."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from styleserve import Client, InvalidArgument
from styleserve.cli import build_parser, option_flags
from styleserve.events import Started
from styleserve.info import ServerLimits
from styleserve.options import Limits, StyleOptions, resolve
from styleserve.plan import total_iterations
from styleserve.v1 import style_transfer_pb2 as pb

from tests.client.client_helpers import cli_command

RAISED = {"max_output_side": 10_000, "max_iterations": 10000}


def test_a_server_with_raised_limits_judges_sizes_the_client_defaults_would_refuse(
    start_server, content, style
):
    with start_server(**RAISED) as srv, Client(srv.target) as client:
        assert client.info().limits.max_output_side == 10_000
        # Accepted by the client and by the server: the job starts (then the test leaves).
        events = client.stream(content, style, size=9000, iterations=9000, scales=[1.0])
        started = next(e for e in events if isinstance(e, Started))
        # 9000 where the picture settles, and the climbing stages' few above it.
        options = resolve(size=9000, iterations=9000, scales=[1.0], limits=None)
        assert started.total_iterations == total_iterations(Image.open(content).size, options)
        assert 9000 < started.total_iterations < 11_000
        events.close()
        # Judged by the server, against its own limit.
        with pytest.raises(InvalidArgument, match=r"options\.size: .*\[16, 10000\]"):
            client.stylize(content, style, size=12_000)


def test_the_cli_leaves_the_range_to_the_server(start_server, content, style, tmp_path):
    with start_server(**RAISED) as srv:
        args = ["--server", srv.target, "-o", str(tmp_path / "out.png"), "--quiet"]
        done = subprocess.run(
            cli_command("stylize", str(content), str(style), "--size", "12000", *args),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert "INVALID_ARGUMENT: options.size" in done.stderr and "10000" in done.stderr
    assert "(request id " in done.stderr


def test_limits_are_one_type_that_travels_whole():
    limit_names = {f.name for f in dataclasses.fields(Limits)}
    server_names = {f.name for f in dataclasses.fields(ServerLimits)}
    capacity = {"job_slots", "queue_size", "feed_forward_slots", "feed_forward_queue_size"}
    assert server_names == limit_names | capacity
    assert {f.name for f in pb.Limits.DESCRIPTOR.fields} == server_names


def test_settings_declare_every_limit_within_the_ceilings():
    from styleserve.options import CEILINGS
    from styleserve_server.settings import Settings

    assert {f.name for f in dataclasses.fields(Limits)} <= set(Settings.model_fields)
    raised = Settings(max_output_side=CEILINGS.max_output_side).limits()
    assert raised.max_output_side == CEILINGS.max_output_side
    with pytest.raises(ValueError, match="max_output_side"):
        Settings(max_output_side=CEILINGS.max_output_side + 1)


def test_stylize_help_lists_a_flag_for_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "--help"])
    text = capsys.readouterr().out
    flags = option_flags()
    assert set(flags) == {f.name for f in dataclasses.fields(StyleOptions)}
    for name, flag in flags.items():
        assert flag in text, name
    assert "--time-budget" in text and "--init-image" in text and "--json" in text


def test_every_flag_reaches_the_request(content, style, tmp_path):
    """Each derived flag parses into the option of its field, with the field's type."""
    args = build_parser().parse_args(
        [
            "stylize", str(content), str(style), "-o", str(tmp_path / "o.png"),
            "--width", "40", "--height", "30", "--optimizer", "adam", "--init", "noise",
            "--precision", "float32", "--backbone", "tiny-vgg16", "--style-scale", "0.5",
            "--style-layers", "block1_conv1,block2_conv1", "--style-layer-weights", "1,2",
            "--learning-rate", "2", "--evals-per-iteration", "3", "--resize", "nearest",
            "--scales", "0.5,1", "--preview-size", "64", "--output-quality", "70",
            "--loss-normalization", "tutorial", "--time-budget", "5", "--no-preserve-color",
        ]
    )  # fmt: skip
    assert (args.width, args.height, args.optimizer, args.init) == (40, 30, "adam", "noise")
    assert args.style_layers == ("block1_conv1", "block2_conv1")
    assert args.style_layer_weights == (1.0, 2.0) and args.scales == (0.5, 1.0)
    assert args.time_budget_seconds == 5.0 and args.preserve_color is False


def _run_cli(*args: str, stderr_file: Path) -> subprocess.CompletedProcess[str]:
    with stderr_file.open("w") as stderr:
        return subprocess.run(
            cli_command(*args), stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300
        )


def test_json_output_and_no_progress_frames_in_a_redirected_stderr(
    server, content, style, tmp_path
):
    log = tmp_path / "stderr.txt"
    out = tmp_path / "out.png"
    done = _run_cli(
        "stylize", str(content), str(style), "-o", str(out), "--server", server.target,
        "--size", "32", "--iterations", "3", "--json", stderr_file=log,
    )  # fmt: skip
    assert done.returncode == 0, log.read_text()
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=done.stdout, capture_output=True, text=True
    )
    assert tool.returncode == 0, tool.stderr
    described = json.loads(done.stdout)
    assert described["output"] == str(out) and out.exists()
    assert described["width"] == 32 and described["iterations"] > 0
    assert set(described["losses"]) == {"total", "content", "style", "tv"}
    assert described["receipt"]["backbone"] == "tiny-vgg16"
    assert "\r" not in log.read_text() and "%|" not in log.read_text()


def test_previews_come_at_the_promised_cadence_on_the_default_preset(
    server, content, style, tmp_path
):
    previews = tmp_path / "previews"
    done = _run_cli(
        "stylize", str(content), str(style), "-o", str(tmp_path / "out.png"),
        "--server", server.target, "--size", "48", "--previews", str(previews),
        stderr_file=tmp_path / "stderr.txt",
    )  # fmt: skip
    assert done.returncode == 0, (tmp_path / "stderr.txt").read_text()
    optimisation = sorted(p for p in previews.glob("preview_*") if p.stem != "preview_00000")
    # The default preset: 200 iterations at full size and 10 at a quarter, a preview every 21.
    assert [int(p.stem.split("_")[1]) for p in optimisation] == list(range(21, 211, 21))
    assert (previews / "preview_00000.png").exists()  # the instant tier's picture first


def test_a_misspelt_option_is_a_type_error_before_the_program_runs(tmp_path):
    from mypy import api

    program = tmp_path / "caller.py"
    program.write_text(
        "from styleserve import Client\n"
        "Client('localhost:1').stylize('c.png', 's.png', itterations=5)\n"
        "Client('localhost:1').stylize('c.png', 's.png', iterations='5')\n"
    )
    report, _, status = api.run(["--strict", "--no-incremental", str(program)])
    assert status == 1
    assert 'Unexpected keyword argument "itterations"' in report
    assert 'incompatible type "str"; expected "int"' in report


def test_health_and_registered_styles_from_the_command_line(server, content, style, tmp_path):
    health = subprocess.run(
        cli_command("health", "--server", server.target), capture_output=True, text=True
    )
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    registered = subprocess.run(
        cli_command("register-style", str(style), "--size", "32", "--server", server.target),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert registered.returncode == 0, registered.stderr
    style_id = registered.stdout.strip()
    assert style_id.startswith("sty_")
    out = tmp_path / "out.png"
    done = subprocess.run(
        cli_command(
            "stylize",
            str(content),
            "--style-id",
            style_id,
            "-o",
            str(out),
            "--size",
            "32",
            "--iterations",
            "2",
            "--server",
            server.target,
            "--time-budget",
            "30",
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.exists() and "iterations in" in done.stdout
