"""``run_job`` with a stop time: it stops before it, with its best iterate, and is otherwise
unchanged. The engine's clock is one the test moves, so that where a job stops is exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from styleserve.options import resolve
from styleserve_server.engine import Finished, Iterate, StopAt, optimize, run_job
from styleserve_server.engine import job as engine_job
from styleserve_server.engine.imaging import resize


class Clock:
    """A ``perf_counter`` that stands still until the test moves it: every step measures 0 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(engine_job, "time", moved)
    return moved


def _options(**overrides):
    return resolve("default", **{"seed": 7, "size": 48, "precision": "float32", **overrides})


def _stopped_after(iterations, clock, backbone, content, styles, options):
    """The records of a job whose time runs out once it has yielded ``iterations`` iterates."""
    records = []
    for record in run_job(backbone, content, styles, options, stop=StopAt(10.0, "deadline")):
        records.append(record)
        if isinstance(record, Iterate) and record.iteration == iterations:
            clock.now = 11.0
    return records[:-1], records[-1]


def test_a_stop_that_never_comes_changes_nothing(tiny, content, warm_style, clock) -> None:
    options = _options(iterations=6, scales=(0.5, 1.0))
    plain = list(run_job(tiny, content, [warm_style], options))
    stop = StopAt(1e9, "time_budget")
    timed = list(run_job(tiny, content, [warm_style], options, stop=stop))
    assert [r.losses for r in timed[:-1]] == [r.losses for r in plain[:-1]]
    finished = timed[-1]
    assert not finished.partial and finished.stop_reason == "completed"
    assert finished.losses == plain[-1].losses == timed[-2].losses
    assert finished.image.tobytes() == plain[-1].image.tobytes()


def test_the_best_iterate_is_delivered_not_the_last(tiny, content, warm_style, clock) -> None:
    # Adam with a long step overshoots on the size-independent objective: its losses go up and
    # down (the relative one is smooth enough that they only fall).
    options = _options(
        iterations=12,
        scales=(1.0,),
        optimizer="adam",
        learning_rate=20.0,
        loss_normalization="size_independent",
        style_weight=1e-4,
        tv_weight=5.0,
    )
    iterates, finished = _stopped_after(5, clock, tiny, content, [warm_style], options)
    assert isinstance(finished, Finished)
    assert finished.partial and finished.stop_reason == "deadline"
    assert finished.iterations == len(iterates) == 5
    best = min(iterates, key=lambda r: r.losses.total)
    assert best is not iterates[-1], "the test needs a job whose last iterate is not its best"
    assert finished.losses == best.losses
    # The same job run to the best iterate's iteration ends on that very picture.
    again = list(run_job(tiny, content, [warm_style], options.replace(iterations=best.iteration)))
    assert finished.image.tobytes() == again[-1].image.tobytes()


def test_a_coarse_stage_s_best_comes_at_the_output_size(tiny, content, warm_style, clock) -> None:
    options = _options(iterations=40, scales=(0.5, 1.0))  # 2 iterations at 24x16, then 48x32
    iterates, finished = _stopped_after(2, clock, tiny, content, [warm_style], options)
    assert [r.stage for r in iterates] == [0, 0]
    assert finished.partial and finished.iterations == 2
    assert finished.image.size == (48, 32)
    assert finished.losses == min((r.losses for r in iterates), key=lambda losses: losses.total)


def test_the_best_is_the_running_stage_s_own(tiny, content, warm_style, clock) -> None:
    options = _options(iterations=40, scales=(0.5, 1.0))
    iterates, finished = _stopped_after(6, clock, tiny, content, [warm_style], options)
    full_size = [r.losses for r in iterates if r.stage == 1]
    assert len(full_size) == 4
    assert finished.losses == min(full_size, key=lambda losses: losses.total)


def test_no_time_for_any_iteration_delivers_the_start(tiny, content, warm_style, clock) -> None:
    options = _options(iterations=40, scales=(0.5, 1.0))
    stop = StopAt(-1.0, "time_budget")
    records = list(run_job(tiny, content, [warm_style], options, stop=stop))
    assert len(records) == 1
    finished = records[0]
    assert finished.partial and finished.stop_reason == "time_budget"
    assert finished.iterations == 0 and finished.losses.total > 0
    # From the content, the start carried to the output size is the content itself.
    start = np.asarray(resize(content, (48, 32), options.resize), dtype=np.int16)
    assert np.abs(np.asarray(finished.image, dtype=np.int16) - start).max() <= 1


@pytest.mark.parametrize("form", ["round", "step", "compact"])
def test_lbfgs_iterates_never_rise_so_a_stop_delivers_the_last(
    form, tiny, content, warm_style, clock, monkeypatch
) -> None:
    """The stopped L-BFGS job keeps its iterate itself, not a copy (``Optimizer.monotone``):
    true only because no L-BFGS iteration raises the loss, in each of its three forms (the
    tutorial's rounds, one continuous run, and the compact one of print sizes)."""
    if form == "compact":
        monkeypatch.setattr(optimize, "_STATE_BYTES", 1)
    evals = 5 if form == "round" else 1
    options = _options(iterations=12, scales=(1.0,), evals_per_iteration=evals)
    iterates, finished = _stopped_after(10, clock, tiny, content, [warm_style], options)
    totals = [r.losses.total for r in iterates]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(totals)), totals
    assert totals[-1] < 0.9 * totals[0]  # they did fall
    assert finished.partial and finished.losses == iterates[-1].losses
    again = list(run_job(tiny, content, [warm_style], options.replace(iterations=10)))
    assert finished.image.tobytes() == again[-1].image.tobytes()
