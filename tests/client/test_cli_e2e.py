"""The ``styleserve`` command as a user runs it: a subprocess against a real server."""

import json
import re
import subprocess

from PIL import Image
from styleserve import Client
from styleserve.cli import CONTACT_SHEET, EXIT_INTERRUPTED
from styleserve.options import PRESETS

from tests.client.client_helpers import (
    CONTENT_SIZE,
    LONG_JOB,
    NEXT_JOB_TIMEOUT,
    QUICK_JOB,
    cli_command,
    ctrl_c,
    run_on_terminal,
)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout)


def test_stylize_writes_the_result_previews_and_a_contact_sheet(server, content, style, tmp_path):
    out = tmp_path / "out.png"
    previews = tmp_path / "previews"
    status, stdout, terminal = run_on_terminal(
        cli_command(
            "stylize",
            str(content),
            str(style),
            "-o",
            str(out),
            "--server",
            server.target,
            "--size",
            "48",
            "--iterations",
            "4",
            "--seed",
            "3",
            "--previews",
            str(previews),
            "--preview-every",
            "2",
        )  # fmt: skip
    )
    assert status == 0, terminal
    assert Image.open(out).size == (48, 48 * CONTENT_SIZE[1] // CONTENT_SIZE[0])
    assert "seed 3" in stdout and str(out) in stdout
    saved = sorted(p.name for p in previews.iterdir())
    assert CONTACT_SHEET in saved
    frames = [name for name in saved if name.startswith("preview_")]
    assert len(frames) >= 2
    sheet = Image.open(previews / CONTACT_SHEET)
    assert sheet.width > Image.open(previews / frames[0]).width
    # On a terminal the progress bar shows and reaches the end: "n/n" iterations.
    assert "stylizing" in terminal
    assert re.search(r"\b(\d+)/\1\b", terminal), terminal
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.png")]


def test_info_json_describes_the_server(server):
    done = _run("info", "--server", server.target, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert set(info["presets"]) == set(PRESETS)
    assert info["limits"]["job_slots"] >= 1
    assert info["version"]


def test_info_as_text(server):
    done = _run("info", "--server", server.target, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "preset     seed:" in done.stdout
    # The precisions a job may ask for: float32 is always among them.
    assert re.search(r"^precision  (\w+, )*float32(, \w+)*; auto is ", done.stdout, re.M)
    assert "styles     0 registered, 0 MiB of 256 MiB cached" in done.stdout


def test_a_rejected_picture_is_one_line_naming_the_code(server, style, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a picture")
    out = tmp_path / "out.png"
    done = _run("stylize", str(bad), str(style), "-o", str(out), "--server", server.target)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("styleserve: INVALID_ARGUMENT: ") and "content" in last
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_ctrl_c_cancels_the_job_on_the_server_and_exits_130(start_server, content, style, tmp_path):
    out = tmp_path / "out.png"
    previews = tmp_path / "previews"
    with start_server(job_slots=1, queue_size=1) as srv:
        # A preview on disk proves the job is running on the server.
        status, stderr = ctrl_c(
            cli_command(
                "stylize", str(content), str(style), "-o", str(out), "--server", srv.target,
                "--size", str(LONG_JOB["size"]), "--iterations", str(LONG_JOB["iterations"]),
                "--previews", str(previews), "--preview-every", "1",
            ),
            lambda: previews.is_dir() and any(previews.iterdir()),
            "a preview",
        )  # fmt: skip
        assert status == EXIT_INTERRUPTED
        assert "cancelled" in stderr.strip().splitlines()[-1]
        assert not out.exists()
        with Client(srv.target) as client:
            result = client.stylize(content, style, timeout=NEXT_JOB_TIMEOUT, **QUICK_JOB)
        assert result.iterations > 0


def test_a_refused_job_leaves_neither_its_output_nor_its_previews(server, content, style, tmp_path):
    out, previews = tmp_path / "out.png", tmp_path / "previews"
    done = _run(
        "stylize", str(content), str(style), "-o", str(out), "--server", server.target,
        "--size", "100000", "--previews", str(previews), timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "INVALID_ARGUMENT: options.size" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (content, style) if p.parent == tmp_path
    )
