"""Style targets that outlive one job: the engine's side of the server's registered styles.

A stage's style targets (the blended Gram matrices its objective compares against) depend on
the style pictures, their blend, the size the pictures are resized to and a few options, but
not on the content (colour preservation aside: it matches each style's luminance to the
content's). So a style the server holds (``styleserve_server.style_cache``) can compute them
once per resolution and hand them to every job that uses it, sparing each job the decoding,
the upload and the forward pass of its style pictures. The engine sees such a style as a
``PreparedStyle``; this module says what identifies one stage's targets (``StyleKey``),
computes them, and prepares the resolutions a registration asks for.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from styleserve.options import StyleOptions
from styleserve.plan import MIN_SIDE, Stage, fit_longest_side, plan
from styleserve_export.artifact import Backbone
from styleserve_export.vgg import conv_shapes

from styleserve_server.engine.colour import Colour
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.imaging import resize, to_tensor
from styleserve_server.engine.objective import style_targets
from styleserve_server.engine.precision import PrecisionChoice, job_precision
from styleserve_server.engine.prepared import Grams, PreparedStyle, StyleKey, StyleVector
from styleserve_server.engine.records import stop_if_cancelled

__all__ = [
    "prepare",
    "region_targets",
    "registration_stages",
    "resized_style",
    "stage_targets",
    "style_key",
    "targets_nbytes",
]


def style_key(stage: Stage, options: StyleOptions, dtype: torch.dtype) -> StyleKey:
    """The key of ``stage``'s style targets for a job with ``options`` whose network runs in
    ``dtype``."""
    if options.loss_normalization == "tutorial":
        # The Keras example stretches the style to the output's shape; its unnormalised Gram
        # matrices only compare at equal sizes.
        box = (round(stage.width * options.style_scale), round(stage.height * options.style_scale))
        stretch = True
    else:
        longest = round(max(stage.width, stage.height) * options.style_scale)
        box, stretch = (longest, longest), False
    return StyleKey(
        box, stretch, options.resize, options.style_layers, options.loss_normalization, dtype
    )


def resized_style(style: Image.Image, key: StyleKey) -> Image.Image:
    """``style`` resized into ``key``'s box."""
    width, height = key.box if key.stretch else fit_longest_side(style.size, key.box[0])
    return resize(style, (max(MIN_SIDE, width), max(MIN_SIDE, height)), key.resize)


def _targets(
    pictures: Sequence[Image.Image],
    *,
    key: StyleKey,
    blend: Sequence[float],
    net: FeatureNet,
    colour: Colour | None,
    tile_pixels: int | None,
    poll: Callable[[], None],
) -> Grams:
    """The targets of ``pictures`` for ``key``, as ``colour`` (None: none) has the network
    see them, in tiles of ``tile_pixels``; ``poll`` runs before each picture's (or tile's)
    forward pass and may raise to stop them."""
    pixels = [to_tensor(resized_style(p, key), net.device) for p in pictures]
    if colour is not None:
        pixels = [colour.style(p) for p in pixels]
    return style_targets(net, key.layers, key.normalization, pixels, blend, poll, tile_pixels)


def _blended(
    key: StyleKey,
    options: StyleOptions,
    net: FeatureNet,
    colour: Colour | None,
    tile_pixels: int | None,
    poll: Callable[[], None],
) -> Callable[[Sequence[Image.Image]], Grams]:
    """``_targets`` of pictures blended as ``options`` blend them, for ``key``."""
    return functools.partial(
        _targets,
        key=key,
        blend=options.style_blend,
        net=net,
        colour=colour,
        tile_pixels=tile_pixels,
        poll=poll,
    )


def stage_targets(
    stage: Stage,
    options: StyleOptions,
    net: FeatureNet,
    colour: Colour,
    styles: Sequence[Image.Image],
    prepared: PreparedStyle | None,
    tile_pixels: int | None = None,
    poll: Callable[[], None] = lambda: None,
) -> Grams:
    """``stage``'s style targets: of ``styles``, or of ``prepared`` (which stands for them)
    and kept there; computed in tiles of ``tile_pixels``, ``poll`` called before each."""
    key = style_key(stage, options, net.dtype)
    compute = _blended(key, options, net, colour, tile_pixels, poll)
    if prepared is None:
        return compute(styles)
    if colour.preserve:
        # The pictures' luminance is matched to this content's: the targets serve one job.
        return compute(prepared.pictures())
    return prepared.grams(key, compute)


def region_targets(
    stage: Stage,
    options: StyleOptions,
    net: FeatureNet,
    colour: Colour,
    pictures: Sequence[Image.Image],
    tile_pixels: int | None = None,
    poll: Callable[[], None] = lambda: None,
) -> list[Grams]:
    """``stage``'s style targets of each of ``pictures`` alone, for regions (which do not
    blend them; a registered style keeps its blend's targets only, so these serve one job),
    computed as ``stage_targets`` computes them."""
    key = style_key(stage, options, net.dtype)
    return [
        _targets([p], key=key, blend=(), net=net, colour=colour, tile_pixels=tile_pixels, poll=poll)
        for p in pictures
    ]


def registration_stages(options: StyleOptions) -> list[Stage]:
    """The stages whose targets a registration with ``options`` prepares: those of a job at
    its size, which all contents share (the longest side decides), except where the tutorial
    stretches the style to the content's shape and no width and height fix it."""
    if options.loss_normalization == "tutorial" and not (options.width and options.height):
        return []
    return plan((options.size, options.size), options)


def targets_nbytes(backbone: Backbone, options: StyleOptions) -> int:
    """Bytes of the targets a registration with ``options`` keeps on ``backbone``, known
    before any is computed: one float32 Gram matrix (channels x channels) per style layer
    and stage."""
    shapes = conv_shapes(backbone.arch, backbone.net.channel_divisor)
    per_stage = sum(4 * shapes[layer][0][0] ** 2 for layer in set(options.style_layers))
    return per_stage * len(registration_stages(options))


def prepare(
    style: PreparedStyle,
    backbone: Backbone,
    options: StyleOptions,
    precision: PrecisionChoice | None,
    style_vector: StyleVector | None,
    cancel: threading.Event | None = None,
    tile_pixels: int | None = None,
) -> None:
    """Has ``style`` keep the targets of ``registration_stages(options)`` on ``backbone``
    (``precision``: what "auto" means, as for ``run_job``) and, with an instant tier's
    ``style_vector``, its style vector; pictures of more than ``tile_pixels`` pixels (None: no
    limit) are computed in tiles, as ``run_job`` computes them. Raises JobCancelled within one
    picture's (or tile's) forward pass of ``cancel`` (None: none) being set."""
    net = FeatureNet(backbone, job_precision(options.precision, backbone, precision).precision)
    poll = functools.partial(stop_if_cancelled, cancel, "style's preparation")
    for stage in registration_stages(options):
        key = style_key(stage, options, net.dtype)
        style.grams(key, _blended(key, options, net, None, tile_pixels, poll))
    stop_if_cancelled(cancel, "style's preparation")
    if style_vector is not None:
        blend = options.style_blend
        style.vector(lambda pictures: style_vector(pictures, blend))
