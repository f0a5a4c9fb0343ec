"""The print-size benchmark at CI size: the script that decides issue 20's goals on the machine
they name runs every part, so that a session lent that machine spends it measuring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "big.py"

pytestmark = [pytest.mark.vgg, pytest.mark.timeout(900)]


def test_the_reduced_big_benchmark_runs_every_part(server_cache: Path, tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--reduced", "--cache-dir", str(server_cache)]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=840, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cpu ")
    assert "refused in" in lines[1] and "RESOURCE_EXHAUSTED" in lines[1]
    # The job ran in tiles (a seam measure, not "whole"), and every goal it decides passed: the
    # refusal names the size that fits, and the seams.
    assert lines[2].startswith("0.15 MP (") and "the content's" in lines[2], lines[2]
    verdicts = lines[3:]
    assert len(verdicts) == 2 and all(line.startswith("PASS ") for line in verdicts), verdicts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.15mp_crop.jpg", "0.15mp_whole.jpg"]
