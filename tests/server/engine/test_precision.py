"""``precision="auto"`` by measurement: the pure decision, the probe, and what jobs run in."""

from __future__ import annotations

import pytest
import torch
from styleserve.options import resolve
from styleserve_server.backbones import warm_up
from styleserve_server.engine import PrecisionChoice, PrecisionTrial, measure_precision, run_job
from styleserve_server.engine.precision import auto_precision, bf16_arithmetic, decide

FLOAT32 = PrecisionTrial("float32", 0.68, 0.0)


def test_the_fastest_agreeing_precision_wins_and_says_why() -> None:
    trials = (FLOAT32, PrecisionTrial("bfloat16", 0.26, 0.002))
    choice = decide(trials, tolerance=0.01)
    assert choice.precision == "bfloat16" and choice.trials == trials
    assert choice.reason == (
        "bfloat16: 2.6x (0.26 s vs 0.68 s) faster than float32, objective within 0.20%"
    )


def test_a_faster_precision_with_another_objective_loses() -> None:
    trials = (
        FLOAT32,
        PrecisionTrial("bfloat16", 0.30, 0.002),
        PrecisionTrial("float16", 0.17, 0.05),
    )
    assert decide(trials, tolerance=0.01).precision == "bfloat16"
    choice = decide(trials, tolerance=0.001)
    assert choice.precision == "float32"
    assert "float16 4.0x (0.17 s vs 0.68 s) but its objective is 5.00% off" in choice.reason


def test_float32_stays_when_nothing_is_clearly_faster() -> None:
    choice = decide((FLOAT32, PrecisionTrial("bfloat16", 0.66, 0.002)), tolerance=0.01)
    assert choice.precision == "float32"
    assert choice.reason == "float32: bfloat16 only 1.0x (0.66 s vs 0.68 s)"


def test_bf16_is_timed_only_on_cpus_that_compute_in_it() -> None:
    avx2 = {"avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}
    assert not bf16_arithmetic(avx2)
    assert bf16_arithmetic({**avx2, "avx512_bf16": True})  # Zen 4
    assert bf16_arithmetic({**avx2, "amx_bf16": True})  # Sapphire Rapids
    assert bf16_arithmetic({"neon": True, "bf16": True})  # ARM's BF16 extension


def test_a_cpu_without_bf16_times_float32_alone_and_says_why(tiny) -> None:
    if bf16_arithmetic(torch.cpu.get_capabilities()):
        pytest.skip("this CPU computes in bf16: the probe times it")
    choice = measure_precision(tiny, size=(64, 48), repeats=1)
    assert [t.precision for t in choice.trials] == ["float32"]
    assert choice.precision == "float32"
    assert choice.reason == (
        "float32: bfloat16 not timed: this CPU has no bf16 arithmetic (AVX512-BF16, AMX or "
        "ARM's BF16)"
    )


def test_the_probe_times_every_candidate(tiny) -> None:
    choice = measure_precision(tiny, size=(64, 48), repeats=1, candidates=("float32", "bfloat16"))
    assert [t.precision for t in choice.trials] == ["float32", "bfloat16"]
    assert choice.trials[0].deviation == 0.0
    assert all(t.seconds > 0 for t in choice.trials)
    assert 0 < choice.trials[1].deviation < 0.05  # bf16 rounding, not another objective
    assert decide(choice.trials) == choice


def test_jobs_run_in_the_given_choice_or_the_measured_one(tiny, content, warm_style) -> None:
    options = resolve("default", size=32, iterations=1, scales=(1.0,), seed=1)
    given = PrecisionChoice("bfloat16", "measured elsewhere", ())
    finished = list(run_job(tiny, content, [warm_style], options, precision=given))[-1]
    assert (finished.precision, finished.precision_choice) == ("bfloat16", given)
    measured = list(run_job(tiny, content, [warm_style], options))[-1]
    assert measured.precision_choice is auto_precision(tiny)  # measured once, then cached
    assert measured.precision == measured.precision_choice.precision


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_requested_precision_is_used_as_asked(tiny, content, warm_style, precision) -> None:
    options = resolve("default", size=32, iterations=1, scales=(1.0,), precision=precision)
    other = PrecisionChoice("float16", "ignored: the request names one", ())
    finished = list(run_job(tiny, content, [warm_style], options, precision=other))[-1]
    assert finished.precision_choice == PrecisionChoice(precision, "requested")


def test_the_servers_warm_up_returns_the_choice_jobs_get(tiny) -> None:
    assert warm_up(tiny) is auto_precision(tiny)
