"""``benchmarks/load.py``'s reattach part at a size CI can afford (issue 22): 12 detachable jobs
on 2 slots, every caller's connection dropped by its own proxy, and every figure within its
threshold, as ``test_reliability`` runs the other parts. The part's drop counts have no
threshold in the benchmark; here they must show that each kind of drop happened, or the run
proved nothing.
"""

from __future__ import annotations

import load
import pytest

# No timeout of its own: the project-wide 600 s leaves room for cores shared with other runs
# (a run beside a benchmark took 195 s, 38 s alone).
pytestmark = pytest.mark.slow


def test_dropped_connections_lose_repeat_and_keep_nothing() -> None:
    figures = load.reattach(slots=2, jobs=12)
    lines = "\n".join(figure.line(load.hardware()) for figure in figures)
    assert all(figure.passed for figure in figures), lines
    drops = {
        kind: next(f.value for f in figures if f.name.endswith(kind))
        for kind in ("drops while queued", "drops mid-job", "callers dropped more than once")
    }
    assert all(drops.values()), lines
