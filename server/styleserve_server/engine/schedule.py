"""Coarse-to-fine: the working sizes of a job's stages and the iterations each one gets.

Early stages are cheap (a quarter of the size is a sixteenth of the work) and settle the
picture's large structures, so that the first previews arrive within seconds and the full-size
stage starts from a stylised picture rather than from the bare content. How many stages, at
which sizes and with how many iterations was measured (benchmarks/README.md): the default
preset's one quarter-size stage of a twentieth of the iterations reaches every loss level
in about 10% fewer evaluations than the former quarter and half stages of a tenth each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_SIDE", "Stage", "plan_stages"]

# VGG pools four times before block5: a side under 16 pixels would vanish.
MIN_SIDE = 16
_COARSE_SHARE = 0.05


@dataclass(frozen=True)
class Stage:
    index: int
    width: int
    height: int
    iterations: int


def _stage_iterations(iterations: int, scale: float) -> int:
    """``iterations`` at full size, a twentieth of them (at least one) at each coarser stage.

    Measured on the seed objective: a quarter-size stage of 10 iterations costs under one
    full-size evaluation and saves five; longer ones only add cost (a tenth: one more
    evaluation to every loss level, a fifth: seven more), since the full-size stage must redo
    the fine detail anyway.
    """
    return iterations if scale == 1.0 else max(1, round(iterations * _COARSE_SHARE))


def plan_stages(size: tuple[int, int], scales: Sequence[float], iterations: int) -> list[Stage]:
    """Stages at ``scales`` of ``size`` (width, height); scales that round to the size of the
    previous stage are merged into it."""
    width, height = size
    stages: list[Stage] = []
    for scale in scales:
        w = width if scale == 1.0 else max(MIN_SIDE, round(width * scale))
        h = height if scale == 1.0 else max(MIN_SIDE, round(height * scale))
        if stages and (stages[-1].width, stages[-1].height) == (w, h):
            stages.pop()
        stages.append(Stage(len(stages), w, h, _stage_iterations(iterations, scale)))
    return stages
