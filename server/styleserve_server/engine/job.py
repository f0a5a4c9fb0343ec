"""``run_job``: one style-transfer job as a generator of progress records.

It owns the job's life: checking what the options cannot check alone, planning the stages,
building each stage's objective, stepping the optimiser, and rendering previews and the result.
Everything it allocates is local to the generator, so closing it (or cancelling) frees it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence

import torch
from PIL import Image
from styleserve.options import StyleOptions
from styleserve_export.loader import Backbone
from torch import Tensor
from torch.nn import functional as F

from styleserve_server.engine.colour import Colour
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import (
    chroma,
    fit_longest_side,
    luminance,
    output_size,
    recombine,
    resize,
    shrink,
    to_image,
    to_tensor,
)
from styleserve_server.engine.objective import Objective, Weights
from styleserve_server.engine.optimize import Box, Evaluator, Optimizer
from styleserve_server.engine.precision import PrecisionChoice, job_precision
from styleserve_server.engine.records import Finished, Iterate, JobCancelled, Losses
from styleserve_server.engine.schedule import MIN_SIDE, Stage, plan_stages

__all__ = ["plan", "run_job"]


def _check(
    styles: Sequence[Image.Image], options: StyleOptions, init_image: Image.Image | None
) -> None:
    if not styles:
        raise ValueError("no style picture: give at least one")
    if options.style_blend and len(options.style_blend) != len(styles):
        raise ValueError(
            f"style_blend has {len(options.style_blend)} weights for {len(styles)} style "
            "pictures: give one weight per style picture, or none for equal shares"
        )
    if options.init == "image" and init_image is None:
        raise ValueError('init="image" needs an init picture: send one, or use init="content"')


def _resized_style(style: Image.Image, stage: Stage, options: StyleOptions) -> Image.Image:
    if options.loss_normalization == "tutorial":
        # The Keras example stretches the style to the output's shape; its unnormalised Gram
        # matrices only compare at equal sizes.
        size = (round(stage.width * options.style_scale), round(stage.height * options.style_scale))
    else:
        longest = round(max(stage.width, stage.height) * options.style_scale)
        size = fit_longest_side(style.size, longest)
    return resize(style, (max(MIN_SIDE, size[0]), max(MIN_SIDE, size[1])), options.resize)


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


def _prepare(
    stage: Stage,
    content: Image.Image,
    styles: Sequence[Image.Image],
    options: StyleOptions,
    net: FeatureNet,
    weights: Weights,
) -> tuple[Colour, Box | None, Tensor, Tensor, Evaluator]:
    """One stage's colour handling, its bounds, its content picture (RGB and as the picture
    variable) and the evaluator of its objective."""
    content_px = to_tensor(resize(content, (stage.width, stage.height), options.resize), net.device)
    colour = Colour(content_px, preserve=options.preserve_color)
    box = _box(content_px, options)
    style_px = [
        colour.style(to_tensor(_resized_style(s, stage, options), net.device)) for s in styles
    ]
    content_var = colour.variable(content_px)
    objective = Objective(net, weights, colour.render(content_var), style_px, options.style_blend)
    evaluator = Evaluator(lambda v: objective(colour.render(v)), box)
    return colour, box, content_px, content_var, evaluator


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


def _losses(terms: Tensor) -> Losses:
    content, style, tv = terms.tolist()
    return Losses(total=content + style + tv, content=content, style=style, tv=tv)


def _preview(colour: Colour, x: Tensor, longest: int) -> Image.Image:
    return shrink(to_image(colour.output(x)), longest)


def plan(content: Image.Image, options: StyleOptions) -> list[Stage]:
    """The coarse-to-fine stages a job on ``content`` with ``options`` runs."""
    size = output_size(content, options.size, options.width, options.height)
    return plan_stages(size, options.scales, options.iterations)


def run_job(
    backbone: Backbone,
    content: Image.Image,
    styles: Sequence[Image.Image],
    options: StyleOptions,
    *,
    init_image: Image.Image | None = None,
    cancel: threading.Event | None = None,
    precision: PrecisionChoice | None = None,
) -> Iterator[Iterate | Finished]:
    """Stylise ``content`` with ``styles``: yields one Iterate per iteration, then one Finished.

    ``precision`` is what "auto" means (``measure_precision``'s choice); None measures it now,
    once per backbone per process. An explicit ``options.precision`` is used as asked.

    Raises JobCancelled within one iteration (in fact one evaluation) of ``cancel`` being set,
    and ValueError when the pictures do not fit the options.
    """
    started = time.perf_counter()
    _check(styles, options, init_image)
    seed = options.seed if options.seed is not None else secrets.randbelow(2**63)
    device = backbone.device
    choice = job_precision(options.precision, backbone, precision)
    net = FeatureNet(backbone, choice.precision)
    weights = Weights.from_options(options)
    stages = plan(content, options)
    total = sum(stage.iterations for stage in stages)
    done = 0
    setup_seconds: float | None = None
    x: Tensor | None = None
    previous: Tensor | None = None
    for stage in stages:
        colour, box, content_px, here, evaluator = _prepare(
            stage, content, styles, options, net, weights
        )
        if x is None:
            x = colour.variable(_start(options, content_px, init_image, net, seed))
        else:
            x = _upsample(x.detach(), here)
            if options.init == "content":
                # The coarse stage could not hold the content's fine detail: add it back, so
                # that the larger stage starts as close to its content as the first one did.
                x += here - _upsample(previous, here)
        if box is not None:
            box.project_(x)  # noise, bicubic overshoot and the added detail leave the box
        previous = here
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
        for _ in range(stage.iterations):
            if cancel is not None and cancel.is_set():
                raise JobCancelled("the job was cancelled")
            optimizer.iteration()
            evaluator()  # the losses of the new iterate (cached when the optimiser just saw it)
            done += 1
            wants_preview = options.preview_every > 0 and (
                done % options.preview_every == 0 or done == total
            )
            yield Iterate(
                iteration=done,
                total=total,
                stage=stage.index,
                width=stage.width,
                height=stage.height,
                losses=_losses(evaluator.terms),
                elapsed=time.perf_counter() - started,
                preview=_preview(colour, x, options.preview_size) if wants_preview else None,
            )
    assert x is not None and setup_seconds is not None
    yield Finished(
        image=to_image(colour.output(x)),
        losses=_losses(evaluator.terms),
        iterations=done,
        seed=seed,
        precision=choice.precision,
        precision_choice=choice,
        device=str(device),
        setup_seconds=setup_seconds,
        optimize_seconds=time.perf_counter() - started - setup_seconds,
    )
