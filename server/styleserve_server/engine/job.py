"""``run_job``: one style-transfer job as a generator of progress records.

It owns the job's life: checking the pictures against the options and planning the stages
(unless its caller did both, as the service does once per request), building each stage's
objective, stepping the optimiser, and rendering previews and the result.
Everything it allocates is local to the generator, so closing it (or cancelling) frees it.
With regions (``engine.regions``), each stage's objective has one part per style, and the
delivered picture keeps the content in the keep region.

Given a stop time, it stops in time: before each iteration (and each stage's set-up) it asks
whether that step, as long as the steps it just measured, would end past the stop, and if so
finishes with its best picture so far instead of its last. Best means the lowest loss, among
the iterates of the latest stage that ran one: losses at different sizes do not compare.
"""

from __future__ import annotations

import collections
import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from styleserve.options import StyleOptions, check_pictures
from styleserve.plan import Stage, plan
from styleserve_export.artifact import Backbone
from torch import Tensor
from torch.nn import functional as F

from styleserve_server.engine.box import Box
from styleserve_server.engine.colour import Colour
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import (
    chroma,
    luminance,
    recombine,
    resize,
    shrink,
    to_image,
    to_tensor,
)
from styleserve_server.engine.objective import Objective, StylePart, Weights
from styleserve_server.engine.optimize import Evaluator, Optimizer
from styleserve_server.engine.precision import PrecisionChoice, job_precision
from styleserve_server.engine.prepared import PreparedStyle
from styleserve_server.engine.records import (
    Finished,
    Iterate,
    Losses,
    StopAt,
    stop_if_cancelled,
)
from styleserve_server.engine.regions import (
    check_masks,
    keep_content,
    keep_weight,
    shares,
    stage_guides,
)
from styleserve_server.engine.style import region_targets, stage_targets
from styleserve_server.engine.temporal import TemporalTarget

__all__ = ["run_job"]


def _box(content: Tensor, options: StyleOptions) -> Box | None:
    """What the picture variable may take so that the output encodes it without clipping, and
    the delivered picture scores what the job reported: 0-255 RGB, or with ``preserve_color``
    the luminances whose recombination with the content's chroma stays in 0-255 (each channel
    is the luminance plus a chroma offset). None for the ``seed`` preset: the Keras example
    optimises unbounded and clips when it saves."""
    if options.preset == "seed":
        return None
    if not options.preserve_color:
        return Box(content.new_zeros(()), content.new_full((), 255.0))
    offsets = recombine(luminance(content).zero_(), chroma(content))
    lo = (-offsets).amax(dim=1, keepdim=True).clamp(0.0, 255.0)
    hi = (255.0 - offsets).amin(dim=1, keepdim=True).clamp(0.0, 255.0)
    return Box(lo, torch.maximum(lo, hi))


def _stage_content(
    content: Image.Image, stage: Stage, options: StyleOptions, device: torch.device
) -> tuple[Tensor, Colour]:
    """The content at ``stage``'s size (RGB) and its colour handling there."""
    content_px = to_tensor(resize(content, (stage.width, stage.height), options.resize), device)
    return content_px, Colour(content_px, preserve=options.preserve_color)


def _content_variable(
    content: Image.Image, stage: Stage, options: StyleOptions, device: torch.device
) -> Tensor:
    """The content as ``stage``'s picture variable: made again when needed rather than kept,
    since at print sizes whole pictures are what a job's memory grows with."""
    content_px, colour = _stage_content(content, stage, options, device)
    return colour.variable(content_px)


def _prepare(
    stage: Stage,
    content: Image.Image,
    styles: Sequence[Image.Image],
    options: StyleOptions,
    net: FeatureNet,
    weights: Weights,
    style: PreparedStyle | None,
    regions: Sequence[np.ndarray] | None,
    tile_pixels: int | None,
    poll: Callable[[], None],
    temporal: TemporalTarget | None = None,
) -> tuple[Colour, Box | None, Tensor, Tensor, Evaluator]:
    """One stage's colour handling, its bounds, its content picture (RGB and as the picture
    variable) and the evaluator of its objective (its style targets from ``styles``, or from
    the prepared ``style`` standing for them; with ``regions``, one part per style; with
    ``temporal``, its term added as a fourth), its pictures computed in tiles of
    ``tile_pixels`` and ``poll`` called before each."""
    content_px, colour = _stage_content(content, stage, options, net.device)
    box = _box(content_px, options)
    content_var = colour.variable(content_px)
    targets = None
    parts: list[StylePart] = []
    if regions is None:
        targets = stage_targets(stage, options, net, colour, styles, style, tile_pixels, poll)
    else:
        size = (stage.width, stage.height)
        parts = [
            StylePart(grams, guide, share)
            for grams, guide, share in zip(
                region_targets(
                    stage,
                    options,
                    net,
                    colour,
                    styles if style is None else style.pictures(),
                    tile_pixels,
                    poll,
                ),
                stage_guides(
                    regions, size, options.region_border, net.arch, options.style_layers, net.device
                ),
                shares(regions),
                strict=True,
            )
        ]
    objective = Objective(
        net,
        weights,
        colour.render(content_var),
        targets=targets,
        parts=parts,
        tile_pixels=tile_pixels,
        poll=poll,
    )
    if temporal is None:
        evaluator = Evaluator(lambda v, box: objective(colour.render(v), box), box)
    else:
        evaluator = Evaluator(functools.partial(_with_temporal, objective, colour, temporal), box)
    return colour, box, content_px, content_var, evaluator


def _with_temporal(
    objective: Objective, colour: Colour, temporal: TemporalTarget, v: Tensor, box: Box | None
) -> tuple[Tensor, Tensor]:
    """``objective`` of the variable ``v`` (clamped into ``box``) with the temporal term of the
    picture it delivers added: (total, its four terms)."""
    total, terms = objective(colour.render(v), box)
    held = temporal(colour.output(v if box is None else box.straight(v)))
    return total + held, torch.cat((terms, held.reshape(1)))


def _start(
    options: StyleOptions,
    content: Tensor,
    init_image: Image.Image | None,
    net: FeatureNet,
    seed: int,
) -> Tensor:
    """The first stage's starting picture, RGB 0-255."""
    if options.init == "content":
        return content
    if options.init == "image":
        assert init_image is not None
        size = (content.shape[-1], content.shape[-2])
        return to_tensor(resize(init_image, size, options.resize), content.device)
    # The Keras example's uniform(0, 255) - 128 in network space: centred on the network's mean.
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(content.shape, generator=generator) * 255.0 - 128.0
    mean = torch.tensor(net.mean_pixel).view(1, 3, 1, 1)
    return (noise + mean).to(content.device)


def _upsample(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bicubic")


def _carry(x: Tensor, coarse: Tensor, fine: Tensor, options: StyleOptions) -> Tensor:
    """The picture variable ``x`` of a stage whose content variable is ``coarse``, at the size
    of the stage whose content variable is ``fine``."""
    grown = _upsample(x.detach(), fine)
    if options.init == "content":
        # The coarse stage could not hold the content's fine detail: add it back, so that the
        # larger picture is as close to its content as the first stage's start was.
        grown += fine - _upsample(coarse, fine)
    return grown


def _losses(terms: Tensor | None) -> Losses:
    assert terms is not None, "evaluate first"
    content, style, tv, *held = terms.tolist()
    temporal = held[0] if held else 0.0
    return Losses(
        total=content + style + tv + temporal,
        content=content,
        style=style,
        tv=tv,
        temporal=temporal,
    )


def _preview(colour: Colour, x: Tensor, longest: int) -> Image.Image:
    return shrink(to_image(colour.output(x)), longest)


class _Best:
    """What a job that stops early delivers: the lowest-loss iterate of the latest stage that
    ran one (a copy, with its stage and its losses), else its start."""

    def __init__(self) -> None:
        self.stage = -1
        self.x: Tensor | None = None
        self.losses: Losses | None = None
        self._iterate = False

    def start(self, stage: int, x: Tensor, losses: Losses) -> None:
        """The starting picture: what a job with no time for any iteration delivers."""
        self.stage, self.x, self.losses = stage, x.detach().clone(), losses

    def offer(self, stage: int, x: Tensor, losses: Losses, *, live: bool) -> None:
        """An iterate: kept when it is the first of its stage or lower than the best. ``live``:
        the optimiser's iterates never rise (``Optimizer.monotone``), so the iterate is the
        best and is kept as ``x`` itself, which no step moves after the job stops: at print
        sizes a copy is a whole picture's memory beside the optimiser's."""
        if live:
            self.stage, self.x, self.losses, self._iterate = stage, x, losses, True
            return
        best = self.losses
        if not self._iterate or stage != self.stage or best is None or losses.total < best.total:
            self.start(stage, x, losses)
            self._iterate = True


# Iterations whose length predicts the next one's: now and then an L-BFGS step's line search
# needs a few more evaluations than usual, which the longest of the last few covers.
_RECENT_ITERATIONS = 4
# Room left for a step this many times as long as predicted: missing the stop loses the whole
# picture, stopping early one iteration. Lengths vary (on a quiet 2-core EPYC, consecutive
# iterations of one stage took 13 to 25 ms), and far more where other processes share the cores.
_SAFETY = 2.0


class _Pace:
    """Whether the next step of a job fits before ``stop`` (always, without one), judged by the
    steps just measured: an iteration by the recent iterations, the first of a stage by the
    stage's first evaluation times one more than an iteration's evaluations (the first step's
    line search costs one more, measured: 2 for continuous L-BFGS and Adam), and a stage's
    set-up by the previous stage's, scaled by area; each with room to spare (``_SAFETY``)."""

    def __init__(self, stop: StopAt | None, evals: int) -> None:
        self._stop = stop
        self._evals = evals
        self._recent: collections.deque[float] = collections.deque(maxlen=_RECENT_ITERATIONS)
        self._stage_seconds = 0.0
        self._area = 1

    def _fits(self, seconds: float) -> bool:
        return self._stop is None or time.perf_counter() + _SAFETY * seconds <= self._stop.at

    def begin(self, stage: Stage, setup: float, evaluation: float) -> None:
        """``stage`` took ``setup`` seconds to prepare and ``evaluation`` to evaluate once."""
        first = evaluation * (self._evals + 1)
        self._recent.clear()
        self._recent.append(first)
        self._stage_seconds = setup + evaluation + first
        self._area = stage.width * stage.height

    def iterated(self, seconds: float) -> None:
        self._recent.append(seconds)

    def iteration_fits(self) -> bool:
        return self._fits(max(self._recent))

    def stage_fits(self, stage: Stage) -> bool:
        """Whether ``stage``'s set-up, first evaluation and first iteration fit."""
        return self._fits(self._stage_seconds * stage.width * stage.height / self._area)


def _delivered(
    best: _Best,
    stages: Sequence[Stage],
    colour: Colour,
    content: Image.Image,
    options: StyleOptions,
    device: torch.device,
) -> Image.Image:
    """The best picture at the output size (``stages`` are the job's, ``colour`` the running
    stage's): as it is when it is the last stage's, else carried up as the next stage would
    have started from it (the picture needs the output's bounds and colours, not an objective)."""
    assert best.x is not None
    last = stages[-1]
    if best.stage == last.index:
        return to_image(colour.output(best.x))
    coarse = _content_variable(content, stages[best.stage], options, device)
    content_px, output = _stage_content(content, last, options, device)
    grown = _carry(best.x, coarse, output.variable(content_px), options)
    box = _box(content_px, options)
    if box is not None:
        box.project_(grown)
    return to_image(output.output(grown))


def run_job(
    backbone: Backbone,
    content: Image.Image,
    styles: Sequence[Image.Image],
    options: StyleOptions,
    *,
    init_image: Image.Image | None = None,
    cancel: threading.Event | None = None,
    precision: PrecisionChoice | None = None,
    stop: StopAt | None = None,
    style: PreparedStyle | None = None,
    stages: Sequence[Stage] | None = None,
    regions: Sequence[np.ndarray] | None = None,
    tile_pixels: int | None = None,
    temporal: TemporalTarget | None = None,
) -> Iterator[Iterate | Finished]:
    """Stylise ``content`` with ``styles``: yields one Iterate per iteration, then one Finished.

    ``precision`` is what "auto" means (``measure_precision``'s choice); None measures it now,
    once per backbone per process. An explicit ``options.precision`` is used as asked.

    With ``stop``, Finished comes before ``stop.at`` when the iterations would end after it:
    marked partial, with the best iterate (a coarse stage's carried up to the output size) and
    the losses its Iterate reported, or with no time for any iteration the starting picture
    and its losses. A job that runs every iteration finishes with its last one, as without.

    ``style`` (a registered style) stands for ``styles``, which are then empty: the job takes
    the style targets it keeps, and it keeps the ones the job computes.

    ``stages`` are the job's stages when its caller planned them already, from pictures it
    checked against the options (the service's ``inputs.check`` checks a request's pictures and
    plans its stages once, from the content's header; ``engine.video`` plans each frame of a
    checked request). None checks the pictures here (``check_pictures``) and plans from
    ``content``: for the callers that come to the engine directly (benchmarks, tests, the
    warm-up job), so that a service's job is not checked twice.

    ``regions`` (None: none) holds one boolean mask per style at the output's size: each style
    paints its own region and the pixels in none keep the content (``engine.regions``).

    ``tile_pixels`` (None: no limit) bounds the pixels the network sees at once: a stage's
    pictures (the content, the styles at their scale and the picture optimised) with more
    are computed in tiles of at most that many pixels, halos included, to the same losses and
    gradients (``engine.tiles``); ``memory.predicted_peak_bytes`` says what memory that takes.

    ``temporal`` (a video frame's, at the output's size) adds its term to the last stage's
    objective (``engine.temporal``): the losses then report it.

    Raises JobCancelled within one iteration (in fact one evaluation, or one tile's pass) of
    ``cancel`` being set, and OptionsError when the pictures do not fit the options (checked
    when ``stages`` is None).
    """
    started = time.perf_counter()
    count = len(styles) if style is None else style.count
    if stages is None:
        check_pictures(options, count, init_image is not None)
        stages = plan(content.size, options)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**63)
    device = backbone.device
    choice = job_precision(options.precision, backbone, precision)
    net = FeatureNet(backbone, choice.precision)
    weights = Weights.from_options(options)
    if regions is not None:
        check_masks(regions, count, (stages[-1].width, stages[-1].height))
    total = sum(stage.iterations for stage in stages)
    done = 0
    setup_seconds: float | None = None
    x: Tensor | None = None
    previous: Stage | None = None
    pace = _Pace(stop, options.evals_per_iteration)
    poll = functools.partial(stop_if_cancelled, cancel)
    best = _Best()
    stopped = False
    for stage in stages:
        if stage.index > 0 and not pace.stage_fits(stage):
            stopped = True
            break
        begun = time.perf_counter()
        colour, box, content_px, here, evaluator = _prepare(
            stage,
            content,
            styles,
            options,
            net,
            weights,
            style,
            regions,
            tile_pixels,
            poll,
            temporal if stage is stages[-1] else None,
        )
        if x is None:
            x = colour.variable(_start(options, content_px, init_image, net, seed))
        else:
            assert previous is not None
            x = _carry(x, _content_variable(content, previous, options, device), here, options)
        # Whole pictures that the stage needs no more: at print sizes, whole pictures are
        # what a job's memory grows with (``memory.predicted_peak_bytes``).
        del content_px, here
        if box is not None:
            box.project_(x)  # noise, bicubic overshoot and the added detail leave the box
        previous = stage
        x.requires_grad_(True)
        evaluator.bind(x, cancel)
        optimizer = Optimizer(
            options.optimizer,
            x,
            evaluator,
            options.evals_per_iteration,
            options.learning_rate,
            box,
        )
        if setup_seconds is None:
            setup_seconds = time.perf_counter() - started
        prepared = time.perf_counter()
        # The start's losses, and the length of one of the stage's evaluations; the optimiser's
        # first evaluation is at the same point, so the cache makes this one free.
        evaluator()
        pace.begin(stage, prepared - begun, time.perf_counter() - prepared)
        if stop is not None and best.x is None:
            best.start(stage.index, x, _losses(evaluator.terms))
        for _ in range(stage.iterations):
            poll()
            if not pace.iteration_fits():
                stopped = True
                break
            begun = time.perf_counter()
            optimizer.iteration()
            evaluator()  # the losses of the new iterate (cached when the optimiser just saw it)
            done += 1
            wants_preview = options.preview_every > 0 and (
                done % options.preview_every == 0 or done == total
            )
            record = Iterate(
                iteration=done,
                total=total,
                stage=stage.index,
                width=stage.width,
                height=stage.height,
                losses=_losses(evaluator.terms),
                elapsed=time.perf_counter() - started,
                preview=_preview(colour, x, options.preview_size) if wants_preview else None,
            )
            pace.iterated(time.perf_counter() - begun)
            if stop is not None:
                best.offer(stage.index, x, record.losses, live=optimizer.monotone)
            yield record
        # Its state (L-BFGS's history) must not outlive the stage into the next one's set-up.
        del optimizer
        if stopped:
            break
    assert x is not None and setup_seconds is not None
    if stopped:
        assert stop is not None and best.losses is not None
        image = _delivered(best, stages, colour, content, options, device)
        losses, reason = best.losses, stop.reason
    else:
        image, losses, reason = to_image(colour.output(x)), _losses(evaluator.terms), "completed"
    if regions is not None:
        kept = resize(content, image.size, options.resize)
        image = keep_content(image, kept, keep_weight(regions, options.region_border, device))
    yield Finished(
        image=image,
        losses=losses,
        iterations=done,
        seed=seed,
        precision=choice.precision,
        precision_choice=choice,
        device=str(device),
        setup_seconds=setup_seconds,
        optimize_seconds=time.perf_counter() - started - setup_seconds,
        partial=stopped,
        stop_reason=reason,
    )
