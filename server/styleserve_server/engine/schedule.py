"""Coarse-to-fine: the working sizes of a job's stages and the iterations each one gets.

Early stages are cheap (a quarter of the size is a sixteenth of the work) and settle the
picture's large structures, so that the full-size stage starts close to a good result and the
first previews arrive within seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_SIDE", "Stage", "plan_stages"]

# VGG pools four times before block5: a side under 16 pixels would vanish.
MIN_SIDE = 16


@dataclass(frozen=True)
class Stage:
    index: int
    width: int
    height: int
    iterations: int


def _stage_iterations(iterations: int, scale: float) -> int:
    """Iterations at ``scale``: ``iterations`` at full size, as many at the coarser stages."""
    return iterations


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
