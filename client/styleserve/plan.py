"""Coarse-to-fine: the working sizes of a job's stages and the iterations each one gets.

Pure arithmetic on sizes and options, in the client package so that the server's engine and
the CLI (which spaces its previews over the job) share one function and cannot disagree on how
many iterations a job runs. ``total_iterations`` is what ``Started.total_iterations`` reports.

Early stages are cheap (a quarter of the size is a sixteenth of the work) and settle the
picture's large structures, so that the first previews arrive within seconds and the full-size
stage starts from a stylised picture rather than from the bare content. How many stages, at
which sizes and with how many iterations was measured (benchmarks/README.md): the default
preset's one quarter-size stage of a twentieth of the iterations reaches every loss level
in about 10% fewer evaluations than the former quarter and half stages of a tenth each.

A big output (more than ``SETTLE_PIXELS``) is settled at that many pixels by the preset's own
stages, then climbs to its size in steps that double the side, each with a few iterations: a
full-size iteration of a 12 MP picture costs as much as two hundred at a quarter megapixel, and
the climb only has to add the detail the larger canvas can hold, since the style's structure
was settled below (the style pictures are worked at the stage's size at every stage, so a brush
stroke keeps its share of the canvas). How many iterations each climbing stage gets was
measured as the loss per iteration (``benchmarks/big.py --tune``): the last, at the output's
size, gets fewer than those below it, where an iteration costs a sixth as much.

A video's frames after the first, when they are kept consistent (``temporal_weight`` above 0),
start from the previous stylised frame carried onto them by the optical flow: their structure
is settled already, so they run the output's size alone with half its iterations, as Ruder et
al. (2016) run their later frames (``plan_frame``); a frame stylised on its own runs ``plan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from styleserve.options import Limits, OptionsError, StyleOptions

__all__ = [
    "MIN_SIDE",
    "SETTLE_PIXELS",
    "Stage",
    "check_output_size",
    "fit_longest_side",
    "iterations_of",
    "output_size",
    "plan",
    "plan_climb",
    "plan_frame",
    "plan_stages",
    "total_iterations",
    "video_iterations",
]

# VGG pools four times before block5: a side under 16 pixels would vanish.
MIN_SIDE = 16
_COARSE_SHARE = 0.05
# Outputs up to this many pixels (1024 x 512, or 724 x 724) run the preset's stages as they are.
SETTLE_PIXELS = 2**19
# Each climbing stage doubles the side; its iterations are this share of the preset's...
_CLIMB_SHARE = 0.05
# ... but the last, at the output's size, where an iteration costs the most (about 60 s at
# 12 MP on two Sapphire Rapids cores, six times the stage below), gets this share: measured as
# the loss per iteration there (benchmarks/big.py --tune, benchmarks/README.md).
_OUTPUT_CLIMB_SHARE = 0.035
# A consistent video's later frames run this share of the output size's iterations.
_LATER_FRAME_SHARE = 0.5


@dataclass(frozen=True)
class Stage:
    """One resolution of a job: its index, working size and iterations."""

    index: int
    width: int
    height: int
    iterations: int


def fit_longest_side(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """``size`` (width, height) scaled so that its longest side is ``longest``."""
    w, h = size
    scale = longest / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def output_size(content_size: tuple[int, int], options: StyleOptions) -> tuple[int, int]:
    """(width, height) of the result: ``width`` x ``height`` when both are set, else the
    content's aspect ratio with its longest side ``size``."""
    if options.width and options.height:
        return options.width, options.height
    return fit_longest_side(content_size, options.size)


def check_output_size(content_size: tuple[int, int], options: StyleOptions, limits: Limits) -> None:
    """The output of a content picture of ``content_size`` keeps its shorter side at least
    ``limits.min_output_side`` (else the network's feature maps would vanish). Raises
    OptionsError saying which size would work."""
    width, height = output_size(content_size, options)
    if min(width, height) >= limits.min_output_side:
        return
    longer, shorter = max(content_size), min(content_size)
    needed = math.ceil(limits.min_output_side * longer / shorter)
    made = f"the content ({content_size[0]}x{content_size[1]}) at size {options.size} gives"
    if needed <= limits.max_output_side:
        advice = f"ask for size >= {needed}, or set width and height"
    else:
        ratio = limits.max_output_side // limits.min_output_side
        advice = (
            f"crop the content to an aspect ratio of at most {ratio}:1, or set width and height"
        )
    raise OptionsError(
        "size",
        f"{made} {width}x{height}, but the shorter side must be at least "
        f"{limits.min_output_side} px: {advice}",
    )


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


def plan_climb(size: tuple[int, int], scales: Sequence[float], iterations: int) -> list[Stage]:
    """``plan_stages`` for an output of ``size`` up to ``SETTLE_PIXELS``; above, the same
    stages at that many pixels, then stages twice as large in side up to ``size``."""
    width, height = size
    if width * height <= SETTLE_PIXELS:
        return plan_stages(size, scales, iterations)
    shrink = math.sqrt(SETTLE_PIXELS / (width * height))
    stages = plan_stages((round(width * shrink), round(height * shrink)), scales, iterations)
    climbs = max(1, round(iterations * _CLIMB_SHARE))
    last_climb = max(1, round(iterations * _OUTPUT_CLIMB_SHARE))
    while (stages[-1].width, stages[-1].height) != size:
        last = stages[-1]
        w, h = min(2 * last.width, width), min(2 * last.height, height)
        if width - w < w // 4 and height - h < h // 4:
            # A last step of under a quarter more side costs nearly a full-size stage for
            # next to no new detail: take the output's size now instead.
            w, h = width, height
        stages.append(Stage(len(stages), w, h, last_climb if (w, h) == size else climbs))
    return stages


def plan(content_size: tuple[int, int], options: StyleOptions) -> list[Stage]:
    """The stages a job on a content picture of ``content_size`` with ``options`` runs."""
    return plan_climb(output_size(content_size, options), options.scales, options.iterations)


def total_iterations(content_size: tuple[int, int], options: StyleOptions) -> int:
    """Iterations over all stages; 0 for a feed-forward job, which runs none."""
    return iterations_of(plan(content_size, options), options)


def iterations_of(stages: Sequence[Stage], options: StyleOptions) -> int:
    """Iterations over ``stages``, planned for ``options``; 0 for a feed-forward job."""
    if options.method == "feed_forward":
        return 0
    return sum(stage.iterations for stage in stages)


def plan_frame(content_size: tuple[int, int], options: StyleOptions, index: int) -> list[Stage]:
    """The stages the frame at ``index`` (0-based) of a video of ``content_size`` frames runs:
    ``plan``'s for the first frame and for frames stylised on their own (``temporal_weight``
    0), else the output's size alone with half its iterations (at least one)."""
    stages = plan(content_size, options)
    if index == 0 or options.temporal_weight == 0:
        return stages
    last = stages[-1]
    iterations = max(1, math.ceil(last.iterations * _LATER_FRAME_SHARE))
    return [Stage(0, last.width, last.height, iterations)]


def video_iterations(content_size: tuple[int, int], options: StyleOptions, frames: int) -> int:
    """Iterations over every frame of a video of ``frames`` frames of ``content_size`` (what
    its ``Started.total_iterations`` reports); 0 for a feed-forward job."""
    first = iterations_of(plan_frame(content_size, options, 0), options)
    later = iterations_of(plan_frame(content_size, options, 1), options)
    return first + later * max(0, frames - 1)
