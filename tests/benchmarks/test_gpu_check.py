"""The GPU check's reduced mode: the same code as on the H200, on the CPU in seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_the_reduced_gpu_check_runs_every_step() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--reduced"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("summary: cpu auto=")
    steps = (
        "precision probe:",
        "loss+gradient at",
        "job 32 px",
        "job 400x300",
        "video 5 frames at 32 px",
        "--job-slots 16",
    )
    for step in steps:
        assert any(step in line for line in lines), step
    # Each precision timed in both memory layouts.
    layouts = [line for line in lines if line.startswith("loss+gradient at")]
    assert layouts and all("NCHW" in line and "channels-last" in line for line in layouts)
