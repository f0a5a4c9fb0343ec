"""What ``precision="auto"`` means on this machine, decided by timing the work itself.

Whether bfloat16 pays depends on more than any flag tells: on a Sapphire Rapids CPU oneDNN's
AMX kernels make loss+gradient 4x faster than float32, on a Zen 4 EPYC (AVX512-BF16, no AMX)
about 2x, on CPUs without bf16 instructions it can be slower, and on GPUs tensor cores decide.
So "auto" times one loss+gradient of the real backbone at a small size in each candidate
precision, checks that the candidate's objective agrees with float32's on the same picture,
and keeps the fastest that does. The result carries its measurements and a sentence saying
why, for logs, receipts and ``GetServerInfo``.

A flag does say when bfloat16 cannot pay: a CPU without bf16 arithmetic (``bf16_arithmetic``)
leaves oneDNN to emulate it. On a 2-core AVX2 EPYC a bf16 evaluation of the probe took 20x
float32's (14.4 s against 0.71 s), and timing it held a server's start-up (or its first job)
for over a minute; there bfloat16 is not timed. Nor is float16 on a CPU, which oneDNN emulates
as well. A service runs only the precisions it timed (``PrecisionChoice.timed``): an emulated
one costs many times what admission counts for it. On that EPYC at 0.5 MP, an emulated bf16
evaluation took 214 s (float32: 7.0 s) and held 1688 bytes a pixel, 1.5x what
``memory`` counts for bf16 (measured where the CPU computes in it), and a forward pass 1414,
2.9x.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from styleserve.options import PRESETS, StyleOptions
from styleserve.plan import plan
from styleserve_export.artifact import Backbone
from torch import Tensor, nn
from torch.nn import functional as F

from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.objective import Objective, Weights

__all__ = [
    "TOLERANCE",
    "PrecisionChoice",
    "PrecisionTrial",
    "auto_precision",
    "bf16_arithmetic",
    "decide",
    "expected_evaluation_seconds",
    "expected_job_seconds",
    "job_precision",
    "measure_precision",
    "probe_pictures",
]

# Largest relative difference of a precision's objective from float32's that still counts as
# the same objective. bf16's objective is 0.2-0.3% off (Gram matrices and losses accumulate in
# float32); a precision 1% off changes what the optimiser converges to.
TOLERANCE = 0.01
# A lower precision must be at least this much faster to be worth its rounding: within timing
# noise float32 wins.
_MIN_SPEEDUP = 1.1
# Probe size and repeats: on a 2-core Zen 4 EPYC the probe costs 1.5 s and its float32/bf16
# ratio (1.95-2.0) is about 15% below the ratio at 300x500 (2.3-2.5), which the sizes a probe
# can afford all share (benchmarks/README.md): the choice it leads to is the same.
PROBE_SIZE = (192, 128)
PROBE_REPEATS = 3


@dataclass(frozen=True)
class PrecisionTrial:
    """One precision's loss+gradient: best-of seconds at the probe size, and the relative
    difference of its objective from float32's on the same picture."""

    precision: str
    seconds: float
    deviation: float


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a job runs in, why (for people), and the trials behind an automatic
    choice (empty when the precision was requested)."""

    precision: str
    reason: str
    trials: tuple[PrecisionTrial, ...] = ()

    @property
    def timed(self) -> tuple[str, ...]:
        """The precisions the device computes in, as far as the trials know: those timed."""
        return tuple(t.precision for t in self.trials)


def expected_evaluation_seconds(choice: PrecisionChoice, size: tuple[int, int]) -> float | None:
    """One loss+gradient evaluation at ``size`` (width, height) here: the probe's measured
    time scaled by the pixels. None when nothing was measured (a requested precision)."""
    trial = next((t for t in choice.trials if t.precision == choice.precision), None)
    if trial is None:
        return None
    return trial.seconds * size[0] * size[1] / (PROBE_SIZE[0] * PROBE_SIZE[1])


def expected_job_seconds(choice: PrecisionChoice, options: StyleOptions) -> float | None:
    """What a job of ``options`` on a 4:3 picture should take here: its stages' evaluations
    (about ``evals_per_iteration`` an iteration) at their sizes."""
    seconds = 0.0
    for stage in plan((4, 3), options):
        evaluation = expected_evaluation_seconds(choice, (stage.width, stage.height))
        if evaluation is None:
            return None
        seconds += evaluation * stage.iterations * options.evals_per_iteration
    return seconds


def decide(
    trials: Sequence[PrecisionTrial],
    tolerance: float = TOLERANCE,
    untried: Sequence[str] = (),
) -> PrecisionChoice:
    """The fastest trial whose objective agrees with float32's within ``tolerance`` and that
    is clearly faster than float32; float32 otherwise. ``trials`` must include float32's;
    ``untried`` says, a sentence each, why a candidate was not timed."""
    reference = next(t for t in trials if t.precision == "float32")
    others = [t for t in trials if t is not reference]

    def speedup(t: PrecisionTrial) -> float:
        return reference.seconds / t.seconds

    def timing(t: PrecisionTrial) -> str:
        return f"{speedup(t):.1f}x ({t.seconds:.3g} s vs {reference.seconds:.3g} s)"

    good = [t for t in others if t.deviation <= tolerance and speedup(t) >= _MIN_SPEEDUP]
    if good:
        best = min(good, key=lambda t: t.seconds)
        return PrecisionChoice(
            best.precision,
            f"{best.precision}: {timing(best)} faster than float32, "
            f"objective within {best.deviation:.2%}",
            tuple(trials),
        )
    why = [
        f"{t.precision} {timing(t)} but its objective is {t.deviation:.2%} off "
        f"(tolerance {tolerance:.1%})"
        if t.deviation > tolerance
        else f"{t.precision} only {timing(t)}"
        for t in others
    ]
    why += untried
    return PrecisionChoice(
        "float32", "float32: " + "; ".join(why or ["no other candidate"]), tuple(trials)
    )


# What ``torch.cpu.get_capabilities()`` names bf16 arithmetic: x86's AVX512-BF16 and AMX, ARM's
# BF16 extension (and its SVE form).
_BF16_ARITHMETIC = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
_NO_BF16 = "bfloat16 not timed: this CPU has no bf16 arithmetic (AVX512-BF16, AMX or ARM's BF16)"


def bf16_arithmetic(capabilities: Mapping[str, Any]) -> bool:
    """Whether a CPU of ``capabilities`` (``torch.cpu.get_capabilities()``) computes in
    bfloat16 itself, rather than leaving oneDNN to emulate it."""
    return any(capabilities.get(name) for name in _BF16_ARITHMETIC)


def _candidates(device: torch.device) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The precisions to time on ``device``, and why any other is not (a sentence each)."""
    # On CPUs oneDNN's fast low-precision convolutions are bf16's; on CUDA float16 is
    # tensor-core work like bf16 (an overflow shows as an objective far off float32's).
    if device.type == "cuda":
        return ("float32", "bfloat16", "float16"), ()
    if bf16_arithmetic(torch.cpu.get_capabilities()):
        return ("float32", "bfloat16"), ()
    return ("float32",), (_NO_BF16,)


def probe_pictures(size: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(content, style, picture): fixed, photo-like 0-255 pictures (smooth shapes plus fine
    grain), the evaluated one between the other two so that every loss term counts; what the
    probe times, and benchmarks/layout.py too."""
    generator = torch.Generator().manual_seed(0)
    width, height = size

    def picture() -> Tensor:
        coarse = torch.rand((1, 3, height // 16 + 1, width // 16 + 1), generator=generator)
        smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        grain = torch.rand((1, 3, height, width), generator=generator) - 0.5
        return ((smooth + 0.2 * grain) * 255.0).clamp(0, 255).to(device)

    content, style = picture(), picture()
    return content, style, 0.5 * (content + style)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_precision(
    backbone: Backbone,
    *,
    size: tuple[int, int] = PROBE_SIZE,
    repeats: int = PROBE_REPEATS,
    tolerance: float = TOLERANCE,
    candidates: Sequence[str] | None = None,
) -> PrecisionChoice:
    """Times loss+gradient of the default preset's objective on ``backbone`` at ``size``
    (width, height) in each of ``candidates`` (by default float32, bfloat16 where the device
    computes in it, float16 too on CUDA), best of ``repeats`` after one untimed call, and
    ``decide``s."""
    device = backbone.device
    content, style, picture = probe_pictures(size, device)
    weights = Weights.from_options(PRESETS["default"])
    untried: Sequence[str] = ()
    if candidates is None:
        candidates, untried = _candidates(device)
    objectives = {
        p: Objective(FeatureNet(backbone, p), weights, content, [style], ()) for p in candidates
    }
    seconds = {p: float("inf") for p in objectives}
    losses: dict[str, float] = {}
    x = picture.requires_grad_(True)
    # Round-robin, so that a burst of load from a neighbour hits every precision alike.
    for _ in range(repeats + 1):
        for p, objective in objectives.items():
            _sync(device)
            start = time.perf_counter()
            loss, _ = objective(x)
            torch.autograd.grad(loss, x)
            _sync(device)
            elapsed = time.perf_counter() - start
            if p in losses:
                seconds[p] = min(seconds[p], elapsed)
            losses[p] = loss.item()
    reference = losses["float32"]
    trials = [
        PrecisionTrial(p, seconds[p], abs(losses[p] - reference) / abs(reference))
        for p in objectives
    ]
    return decide(trials, tolerance, untried)


_measured: weakref.WeakKeyDictionary[nn.Module, PrecisionChoice] = weakref.WeakKeyDictionary()
_measured_lock = threading.Lock()


def auto_precision(backbone: Backbone) -> PrecisionChoice:
    """``measure_precision(backbone)``, measured once per backbone network per process."""
    with _measured_lock:
        known = _measured.get(backbone.net)
    if known is None:
        # Measured outside the lock: one network's slow (or stuck) start must not hold up
        # another's; two racing measurements of one network keep the first.
        measured = measure_precision(backbone)
        with _measured_lock:
            known = _measured.setdefault(backbone.net, measured)
    return known


def job_precision(
    requested: str, backbone: Backbone, measured: PrecisionChoice | None
) -> PrecisionChoice:
    """The precision a job runs in: ``requested`` as asked, or for "auto" ``measured`` (None:
    ``auto_precision``)."""
    if requested != "auto":
        return PrecisionChoice(requested, "requested")
    return measured if measured is not None else auto_precision(backbone)
