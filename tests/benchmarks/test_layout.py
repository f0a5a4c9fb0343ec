"""The layout benchmark's reduced mode: the same cases as on the real VGG16, in seconds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "layout.py"


def test_the_reduced_layout_benchmark_times_every_case_in_both_layouts() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--reduced", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    machine, *lines = done.stdout.splitlines()
    assert machine.startswith("cpu ")
    float32 = [line for line in lines if line.startswith("float32 ")]
    cases = ("seed loss+gradient", "one tile", "tiles of 65536", "forward")
    assert len(float32) == len(cases)
    for case, line in zip(cases, float32, strict=True):
        assert case in line
        # Both layouts timed, and the same value within float rounding.
        found = re.search(r"NCHW [\d.]+ s, channels-last [\d.]+ s .* value ([\d.e+-]+) apart", line)
        assert found, line
        assert float(found.group(1)) < 1e-3
