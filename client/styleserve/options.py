"""The one place where a job's options, their presets and the service's limits are defined.

The CLI, the client library and the server all read their defaults from here (the client
without torch), so a default changed here changes everywhere and the three never disagree.
A request names a preset and overrides some fields; ``resolve`` fills in the rest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKBONES",
    "DEADLINE_POLICIES",
    "INITS",
    "LOSS_NORMALIZATIONS",
    "LIMITS",
    "METHODS",
    "OPTIMIZERS",
    "OUTPUT_FORMATS",
    "PRECISIONS",
    "PRESETS",
    "RESIZE_FILTERS",
    "VGG_LAYERS",
    "Limits",
    "OptionsError",
    "StyleOptions",
    "resolve",
]

# Convolution layers of VGG16 in the Keras naming the whole project uses; VGG19 adds
# block3_conv4, block4_conv4 and block5_conv4.
VGG_LAYERS: dict[str, tuple[str, ...]] = {
    "vgg16": tuple(
        f"block{b}_conv{c}"
        for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
        for c in range(1, n + 1)
    ),
    "vgg19": tuple(
        f"block{b}_conv{c}"
        for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
        for c in range(1, n + 1)
    ),
}
BACKBONES: dict[str, str] = {
    "keras-vgg16": "vgg16",
    "torchvision-vgg16": "vgg16",
    "torchvision-vgg19": "vgg19",
    # VGG16's shape with 1/16 of the channels and fixed random weights: servers started with it
    # need no exported weights, which makes it the network of fast tests and smoke checks.
    "tiny-vgg16": "vgg16",
}
OPTIMIZERS = ("lbfgs", "adam")
# "feed_forward" starts from the instant tier's picture (see METHODS).
INITS = ("noise", "content", "image", "feed_forward")
# "optimization" is Gatys' optimisation of the picture; "feed_forward" is one pass of an
# arbitrary-style network (the instant tier), which only servers that loaded one can run.
METHODS = ("optimization", "feed_forward")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
RESIZE_FILTERS = ("nearest", "antialias")
LOSS_NORMALIZATIONS = ("tutorial", "size_independent")
# "best_so_far": a job whose time runs out sends its best picture as a partial Result;
# "strict": it runs every iteration or fails (DEADLINE_EXCEEDED).
DEADLINE_POLICIES = ("best_so_far", "strict")


class OptionsError(ValueError):
    """An option is out of range; ``field`` names it so that callers can point at it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class StyleOptions:
    """Everything that decides a stylised picture. Defaults are the ``default`` preset's."""

    preset: str = "default"
    method: str = "optimization"
    backbone: str = "keras-vgg16"
    # Output size: ``width`` x ``height`` when both are set, else the content's aspect ratio
    # with its longest side equal to ``size``.
    size: int = 512
    width: int = 0
    height: int = 0
    # Optimiser iterations at full resolution (coarser stages add a twentieth each). With
    # ``evals_per_iteration`` > 1 an iteration is one of the tutorial's rounds: a fresh L-BFGS
    # making at most that many loss evaluations (its ``maxfun``); with 1, one L-BFGS runs on
    # through the stage and an iteration is one of its steps (line search included).
    iterations: int = 200
    evals_per_iteration: int = 1
    optimizer: str = "lbfgs"
    # Adam's step, or L-BFGS's first step, in pixel units (0-255 scale).
    learning_rate: float = 1.0
    content_weight: float = 1.0
    style_weight: float = 1.0e-4
    tv_weight: float = 5.0
    tv_power: float = 1.25
    content_layers: tuple[str, ...] = ("block4_conv2",)
    style_layers: tuple[str, ...] = (
        "block1_conv1",
        "block2_conv1",
        "block3_conv1",
        "block4_conv1",
        "block5_conv1",
    )
    # Per style layer; empty means equal shares of ``style_weight``.
    style_layer_weights: tuple[float, ...] = ()
    # Per style picture; empty means equal shares.
    style_blend: tuple[float, ...] = ()
    # Style pictures are resized to ``style_scale`` times the output size.
    style_scale: float = 1.0
    preserve_color: bool = False
    # Feed-forward pictures only: 0 keeps the content's own style vector, 1 takes the styles'.
    style_strength: float = 1.0
    init: str = "content"
    # None: the server draws one and reports it in the receipt.
    seed: int | None = None
    precision: str = "auto"
    resize: str = "antialias"
    loss_normalization: str = "size_independent"
    # Coarse-to-fine: fractions of the output size, the last one 1.0.
    scales: tuple[float, ...] = (0.25, 1.0)
    # Seconds of work once the job has a slot (0: no budget); see ``deadline_policy``.
    time_budget_seconds: float = 0.0
    deadline_policy: str = "best_so_far"
    # Previews: every N iterations (0: none), longest side in pixels.
    preview_every: int = 0
    preview_size: int = 256
    output_format: str = "png"
    output_quality: int = 92

    def replace(self, **changes: Any) -> StyleOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The tutorial, exactly: 300x500 from noise, nearest-neighbour resizing, 30 L-BFGS rounds of
# 20 evaluations, its weights and its loss normalisation.
_SEED = StyleOptions(
    preset="seed",
    size=500,
    width=500,
    height=300,
    iterations=30,
    evals_per_iteration=20,
    optimizer="lbfgs",
    learning_rate=1.0,
    content_weight=0.025,
    style_weight=1.0,
    tv_weight=1.0,
    tv_power=1.25,
    init="noise",
    precision="float32",
    resize="nearest",
    loss_normalization="tutorial",
    scales=(1.0,),
)

# The default preset's picture in a fraction of a second: one feed-forward pass, no optimisation
# (its optimisation fields are kept so that a caller can switch ``method`` back alone).
_INSTANT = StyleOptions(preset="instant", method="feed_forward")

PRESETS: dict[str, StyleOptions] = {"default": StyleOptions(), "instant": _INSTANT, "seed": _SEED}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. The server's settings may tighten these, never loosen
    them past what its memory allows; ``GetServerInfo`` reports the values in force."""

    max_request_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    max_input_pixels: int = 40_000_000
    max_output_side: int = 2048
    max_iterations: int = 5000
    max_evals_per_iteration: int = 100
    max_styles: int = 8
    max_preview_size: int = 1024
    min_output_side: int = 16
    extra: dict[str, Any] = field(default_factory=dict)


LIMITS = Limits()


def resolve(preset: str = "default", limits: Limits = LIMITS, **overrides: Any) -> StyleOptions:
    """The preset's options with ``overrides`` applied (None means "keep the preset's"),
    validated against ``limits``. Raises OptionsError naming the first bad field."""
    if preset not in PRESETS:
        raise OptionsError("preset", f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(StyleOptions)}
    unknown = set(overrides) - names
    if unknown:
        raise OptionsError(sorted(unknown)[0], "unknown option")
    changes = {k: v for k, v in overrides.items() if v is not None}
    for name in ("content_layers", "style_layers", "style_layer_weights", "style_blend", "scales"):
        if name in changes:
            changes[name] = tuple(changes[name])
    options = PRESETS[preset].replace(**changes)
    _validate(options, limits)
    return options


def _finite(name: str, value: float, *, minimum: float = 0.0, positive: bool = False) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionsError(name, f"must be a finite number, got {value!r}")
    if value < minimum or (positive and value <= 0):
        bound = f"> {minimum}" if positive else f">= {minimum}"
        raise OptionsError(name, f"must be {bound}, got {value!r}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise OptionsError(name, f"must be one of {', '.join(allowed)}; got {value!r}")


def _int_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise OptionsError(name, f"must be an integer in [{low}, {high}], got {value!r}")


def _validate(o: StyleOptions, limits: Limits) -> None:
    _choice("method", o.method, METHODS)
    _choice("backbone", o.backbone, tuple(BACKBONES))
    _choice("optimizer", o.optimizer, OPTIMIZERS)
    _choice("init", o.init, INITS)
    _choice("precision", o.precision, PRECISIONS)
    _choice("resize", o.resize, RESIZE_FILTERS)
    _choice("loss_normalization", o.loss_normalization, LOSS_NORMALIZATIONS)
    _choice("output_format", o.output_format, OUTPUT_FORMATS)
    _choice("deadline_policy", o.deadline_policy, DEADLINE_POLICIES)
    _finite("time_budget_seconds", o.time_budget_seconds)
    if o.time_budget_seconds and o.deadline_policy == "strict":
        raise OptionsError(
            "time_budget_seconds", 'a time budget needs deadline_policy "best_so_far"'
        )
    side = (limits.min_output_side, limits.max_output_side)
    _int_range("size", o.size, *side)
    if o.width or o.height:
        _int_range("width", o.width, *side)
        _int_range("height", o.height, *side)
    _int_range("iterations", o.iterations, 1, limits.max_iterations)
    _int_range("evals_per_iteration", o.evals_per_iteration, 1, limits.max_evals_per_iteration)
    _int_range("preview_every", o.preview_every, 0, limits.max_iterations)
    _int_range("preview_size", o.preview_size, limits.min_output_side, limits.max_preview_size)
    _int_range("output_quality", o.output_quality, 1, 100)
    if o.seed is not None:
        _int_range("seed", o.seed, 0, 2**63 - 1)
    _finite("learning_rate", o.learning_rate, positive=True)
    for name in ("content_weight", "style_weight", "tv_weight"):
        _finite(name, getattr(o, name))
    _finite("tv_power", o.tv_power, positive=True)
    _finite("style_scale", o.style_scale, positive=True)
    _finite("style_strength", o.style_strength)
    if o.style_strength > 1:
        raise OptionsError("style_strength", f"must be in [0, 1], got {o.style_strength}")
    if o.style_scale > 4:
        raise OptionsError("style_scale", f"must be <= 4, got {o.style_scale}")
    layers = VGG_LAYERS[BACKBONES[o.backbone]]
    for name in ("content_layers", "style_layers"):
        chosen = getattr(o, name)
        if not chosen:
            raise OptionsError(name, "name at least one layer")
        for layer in chosen:
            if layer not in layers:
                raise OptionsError(
                    name, f"{layer!r} is not a layer of {o.backbone}: {', '.join(layers)}"
                )
    if o.style_layer_weights and len(o.style_layer_weights) != len(o.style_layers):
        raise OptionsError(
            "style_layer_weights",
            f"give one weight per style layer ({len(o.style_layers)}), "
            f"got {len(o.style_layer_weights)}",
        )
    for name in ("style_layer_weights", "style_blend"):
        for w in getattr(o, name):
            _finite(name, w)
        if getattr(o, name) and sum(getattr(o, name)) <= 0:
            raise OptionsError(name, "weights must not all be zero")
    if not o.scales or o.scales[-1] != 1.0:
        raise OptionsError("scales", "give increasing fractions of the output size ending in 1.0")
    for s in o.scales:
        _finite("scales", s, positive=True)
    if list(o.scales) != sorted(o.scales):
        raise OptionsError("scales", "must be increasing")
