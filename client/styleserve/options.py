"""The one place where a job's options, their presets and the service's limits are defined.

The CLI, the client library and the server all read their defaults from here (the client
without torch), so a default changed here changes everywhere and the three never disagree.
A request names a preset and overrides some fields; ``resolve`` fills in the rest and checks
them. A client resolves a job's options once (``resolve_given``) and sends what it resolved;
the server resolves what it receives once more, against its own limits. The checks that
depend on a server's limits (sizes, iteration counts) run only where the limits are known:
the server checks them against its own, and the client leaves them to it, so that a server
started with raised limits is usable from the SDK and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

__all__ = [
    "BACKBONES",
    "DEADLINE_POLICIES",
    "INITS",
    "KERAS_VGG16",
    "LOSS_NORMALIZATIONS",
    "LIMITS",
    "MAGENTA_FEED_FORWARD",
    "METHODS",
    "OPTIMIZERS",
    "OUTPUT_FORMATS",
    "PRECISIONS",
    "PRESETS",
    "RESIZE_FILTERS",
    "STYLE_FIELDS",
    "TINY_FEED_FORWARD",
    "TINY_VGG16",
    "TORCHVISION_VGG16",
    "TORCHVISION_VGG19",
    "VGG_LAYERS",
    "CEILINGS",
    "DEFAULT_PORT",
    "GRPC_DEFAULT_MESSAGE_BYTES",
    "JobOptions",
    "Limits",
    "OptionsError",
    "ResolvedOptions",
    "StyleOptions",
    "MAX_REQUEST_ID_LENGTH",
    "check_lengths",
    "check_pictures",
    "check_request_id",
    "check_style_size",
    "resolve",
    "resolve_given",
    "shown",
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
# The networks a server may serve, by the names of their artifacts: the exporter writes them
# under these names and the server loads them by these names (the client has no part of either,
# so the names live here, where the backbone option's choices need them).
KERAS_VGG16 = "keras-vgg16"
TORCHVISION_VGG16 = "torchvision-vgg16"
TORCHVISION_VGG19 = "torchvision-vgg19"
# VGG16's shape with 1/16 of the channels and fixed random weights: servers started with it
# need no exported weights, which makes it the network of fast tests and smoke checks.
TINY_VGG16 = "tiny-vgg16"
# The instant tier's pair: Magenta's arbitrary image stylisation networks, and a stand-in with
# their inputs, outputs and size behaviour and a few fixed weights (tests, smoke checks).
MAGENTA_FEED_FORWARD = "magenta-arbitrary"
TINY_FEED_FORWARD = "tiny-arbitrary"
# Each network's VGG architecture (a key of VGG_LAYERS).
BACKBONES: dict[str, str] = {
    KERAS_VGG16: "vgg16",
    TORCHVISION_VGG16: "vgg16",
    TORCHVISION_VGG19: "vgg19",
    TINY_VGG16: "vgg16",
}
OPTIMIZERS = ("lbfgs", "adam")
# "feed_forward" starts from the instant tier's picture (see METHODS).
INITS = ("noise", "content", "image", "feed_forward")
# "optimization" is Gatys' optimisation of the picture; "feed_forward" is one pass of an
# arbitrary-style network (the instant tier), which only servers that loaded one can run.
METHODS = ("optimization", "feed_forward")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
# The longest side the WebP format holds (libwebp's WEBP_MAX_DIMENSION).
_WEBP_MAX_SIDE = 16383
RESIZE_FILTERS = ("nearest", "antialias")
LOSS_NORMALIZATIONS = ("tutorial", "size_independent", "relative")
# The options that decide a style's targets: a registered style fixes them for every job that
# names its style_id (the job may leave them unset or repeat them, not change them).
STYLE_FIELDS = (
    "backbone", "style_layers", "style_scale", "resize", "loss_normalization", "precision",
)  # fmt: skip
# "best_so_far": a job whose time runs out sends its best picture as a partial Result;
# "strict": it runs every iteration or fails (DEADLINE_EXCEEDED).
DEADLINE_POLICIES = ("best_so_far", "strict")


class OptionsError(ValueError):
    """An option or a picture cannot be used as given: ``field`` names it so that callers can
    point at it, ``message`` says what to send instead."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _option(default: Any, help: str, *, choices: Sequence[str] = (), flag: str = "") -> Any:
    """A StyleOptions field with what a command line needs to offer it: its help text, its
    closed choices and, where the field's own name reads badly as a flag, the flag's name.
    The CLI builds its flags from these, so every option has exactly one flag."""
    metadata = {"help": help, "choices": tuple(choices), "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class StyleOptions:
    """Everything that decides a stylised picture. Defaults are the ``default`` preset's."""

    preset: str = _option("default", "starting options", choices=("default", "instant", "seed"))
    method: str = _option(
        "optimization",
        "optimization (Gatys: seconds to minutes) or feed_forward (the instant tier: one pass "
        "of an arbitrary-style network, a fraction of a second)",
        choices=METHODS,
    )
    backbone: str = _option(
        KERAS_VGG16, "network whose features are compared", choices=tuple(BACKBONES)
    )
    size: int = _option(
        512,
        "longest output side in pixels, keeping the content's aspect ratio (set alone, it "
        "replaces a preset's width and height)",
    )
    width: int = _option(0, "output width in pixels; with height, overrides size")
    height: int = _option(0, "output height in pixels; with width, overrides size")
    # With ``evals_per_iteration`` > 1 an iteration is one of the tutorial's rounds: a fresh
    # L-BFGS making at most that many loss evaluations (its ``maxfun``); with 1, one L-BFGS
    # runs on through the stage and an iteration is one of its steps (line search included).
    iterations: int = _option(
        200,
        "optimiser iterations at full size (coarser stages add a twentieth each); an output "
        "over 0.5 MP runs them at 0.5 MP, then climbs to its size in a few more",
    )
    evals_per_iteration: int = _option(
        1, "most loss evaluations per iteration (the tutorial's L-BFGS maxfun)"
    )
    optimizer: str = _option("lbfgs", "optimiser", choices=OPTIMIZERS)
    learning_rate: float = _option(
        1.0, "Adam's step, or L-BFGS's first step, in pixel units (0-255)"
    )
    # The default's weights are of the ``relative`` terms (each divided by its start value):
    # calibrated by benchmarks/quality.py, they close about the same share of the style gap on
    # every style of its grid; the strength, not these, is the knob for more or less style.
    content_weight: float = _option(1.0, "weight of the content loss")
    style_weight: float = _option(10.0, "weight of the style loss")
    tv_weight: float = _option(0.3, "weight of the total-variation loss")
    tv_power: float = _option(1.25, "power of the total-variation loss")
    content_layers: tuple[str, ...] = _option(
        ("block4_conv2",), "layers compared for content, e.g. block4_conv2"
    )
    style_layers: tuple[str, ...] = _option(
        ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"),
        "layers whose Gram matrices are compared for style",
    )
    style_layer_weights: tuple[float, ...] = _option(
        (), "one weight per style layer (default: equal shares of style_weight)"
    )
    style_blend: tuple[float, ...] = _option(
        (), "one weight per style picture (default: equal shares)"
    )
    style_scale: float = _option(1.0, "style pictures are resized to this times the output size")
    preserve_color: bool = _option(False, "keep the content's colours (transfer luminance only)")
    style_strength: float = _option(
        0.75,
        "how much of the style: 0 keeps the content's own, 1 takes the styles' (the "
        "optimisation moves its style targets that far, a feed-forward picture its style vector)",
    )
    init: str = _option("content", "where the optimised picture starts", choices=INITS)
    seed: int | None = _option(None, "random seed (default: the server draws one)")
    precision: str = _option("auto", "arithmetic precision of the network", choices=PRECISIONS)
    resize: str = _option("antialias", "filter that resizes the inputs", choices=RESIZE_FILTERS)
    loss_normalization: str = _option(
        "relative", "how the loss terms are scaled", choices=LOSS_NORMALIZATIONS
    )
    scales: tuple[float, ...] = _option(
        (0.25, 1.0), "coarse-to-fine stages: increasing fractions of the output size ending in 1"
    )
    # Wide enough that the shallow style layers (receptive fields of a few pixels) need no
    # erosion at all and that seams do not show; narrow against a region at 512 px.
    region_border: float = _option(
        8.0,
        "with regions: output pixels a style may reach past its region's edge (the "
        "optimisation's guides are eroded to it, the instant tier feathers over it)",
    )
    # With StylizeVideo. Half way: the optimisation's frames start from the previous one carried
    # by the flow anyway, and its temporal term at 0.5 holds a reliable pixel to within a few
    # levels (``engine.temporal``) while leaving the style room to settle what the flow got
    # slightly wrong; much higher, flow errors pile up over the frames as smears.
    temporal_weight: float = _option(
        0.5,
        "with video: how much each frame keeps of the previous stylised frame carried by the "
        "optical flow, where the flow is reliable (0: every frame on its own, which flickers)",
    )
    time_budget_seconds: float = _option(
        0.0,
        "seconds of work once the job has a slot; then the best picture so far is sent "
        "(0: no budget)",
        flag="time-budget",
    )
    deadline_policy: str = _option(
        "best_so_far",
        "when the time budget or the call's deadline runs out: send the best picture so far, "
        "or (strict) run every iteration or fail",
        choices=DEADLINE_POLICIES,
    )
    preview_every: int = _option(0, "a preview every N iterations (0: none)")
    preview_size: int = _option(256, "longest side of previews in pixels")
    output_format: str = _option("png", "encoding of the result", choices=OUTPUT_FORMATS)
    output_quality: int = _option(92, "JPEG / WebP quality, 1-100")

    def replace(self, **changes: Any) -> StyleOptions:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class JobOptions(TypedDict, total=False):
    """The keyword options of ``Client.stylize`` / ``stream``: StyleOptions' fields, typed for
    checkers and IDEs (a misspelt name is an error before the program runs).
    ``tests/client/test_options.py`` keeps its keys and types equal to StyleOptions' fields. Options
    left out take the preset's value."""

    preset: str
    method: str
    backbone: str
    size: int
    width: int
    height: int
    iterations: int
    evals_per_iteration: int
    optimizer: str
    learning_rate: float
    content_weight: float
    style_weight: float
    tv_weight: float
    tv_power: float
    content_layers: Sequence[str]
    style_layers: Sequence[str]
    style_layer_weights: Sequence[float]
    style_blend: Sequence[float]
    style_scale: float
    preserve_color: bool
    style_strength: float
    init: str
    seed: int | None
    precision: str
    resize: str
    loss_normalization: str
    scales: Sequence[float]
    region_border: float
    temporal_weight: float
    time_budget_seconds: float
    deadline_policy: str
    preview_every: int
    preview_size: int
    output_format: str
    output_quality: int


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
    style_strength=1.0,
    temporal_weight=0.0,
)

# The default preset's picture in a fraction of a second: one feed-forward pass, no optimisation
# (its optimisation fields are kept so that a caller can switch ``method`` back alone). Its
# strength stays the style's whole vector, as the tier has always painted.
#
# Its temporal weight is the share of the previous output blended in where the flow holds: the
# network turns small changes of the input into large ones of the output, so it needs more than
# the optimisation, which starts each frame from the previous one. 0.7 leaves about 0.4 of the
# flicker's amplitude (a first-order recursive filter passes sqrt((1 - a) / (1 + a)) of white
# noise) while a pixel still takes most of a change of the scene within a few frames.
_INSTANT = StyleOptions(
    preset="instant", method="feed_forward", style_strength=1.0, temporal_weight=0.7
)

PRESETS: dict[str, StyleOptions] = {"default": StyleOptions(), "instant": _INSTANT, "seed": _SEED}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: these defaults, or what the server's settings make them
    (a server with a large GPU may raise them up to ``CEILINGS``); ``GetServerInfo`` reports
    the values in force."""

    max_request_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    max_input_pixels: int = 40_000_000
    # Print sizes (40 MP is 7300 x 5475): a job's memory is bounded by tiles and admitted by
    # the server's memory budget, so the side alone need not keep it small.
    max_output_side: int = 8192
    max_iterations: int = 5000
    max_evals_per_iteration: int = 100
    max_styles: int = 8
    max_preview_size: int = 1024
    min_output_side: int = 16
    # Entries of StyleOptions.scales.
    max_scales: int = 8
    # Entries of each of content_layers, style_layers and style_layer_weights.
    max_layers: int = 16
    # Characters of every string option (preset, backbone, a layer name, ...).
    max_name_length: int = 64
    # Bytes of memory the server's running jobs may hold at once (their predicted peaks); 0 in
    # a server's settings: measured at start-up from the memory the device has.
    memory_budget_bytes: int = 0
    # StylizeVideo: frames of one call (10 s at 30 fps; a longer clip is several calls, which
    # a balancer spreads), its frame rate, and the frames read ahead of their answers (enough
    # to keep the decoding of the next frame beside the stylisation of this one).
    max_video_frames: int = 300
    max_video_fps: int = 120
    max_frames_in_flight: int = 4
    # Seconds a streaming call (UploadPicture, StylizeVideo) may leave the server waiting for
    # its caller's next message, or for its caller to read a StylizeVideo answer, before it
    # ends DEADLINE_EXCEEDED: such a call holds a slot or the store's room meanwhile.
    stream_idle_seconds: int = 60


LIMITS = Limits()
# The most any server may allow, whatever its settings: gRPC's message size is a signed 32-bit
# count, and past these sizes and counts the loss arithmetic or a single job's memory stops
# making sense on any device. ``min_output_side`` is a floor rather than a ceiling: VGG pools
# four times, so a smaller side would vanish.
CEILINGS = Limits(
    max_request_bytes=2**31 - 1,
    max_image_bytes=2**31 - 1,
    max_input_pixels=2**30,
    max_output_side=16384,
    max_iterations=100_000,
    max_evals_per_iteration=1000,
    max_styles=64,
    max_preview_size=4096,
    min_output_side=16,
    max_scales=64,
    max_layers=64,
    max_name_length=256,
    memory_budget_bytes=2**50,
    max_video_frames=100_000,
    max_video_fps=1000,
    max_frames_in_flight=64,
    stream_idle_seconds=3600,
)


def resolve(
    preset: str = "default", limits: Limits | None = LIMITS, **overrides: Any
) -> StyleOptions:
    """The preset's options with ``overrides`` applied (None means "keep the preset's"),
    validated: names, types, closed choices and fixed ranges always, the ranges that depend
    on a server's limits against ``limits`` (None: left to the server). Raises OptionsError
    naming the first bad field."""
    if preset not in PRESETS:
        raise OptionsError(
            "preset", f"unknown preset {shown(preset)}; choose one of {sorted(PRESETS)}"
        )
    names = {f.name for f in dataclasses.fields(StyleOptions)}
    unknown = set(overrides) - names
    if unknown:
        raise OptionsError(sorted(unknown)[0], "unknown option")
    changes = {k: v for k, v in overrides.items() if v is not None}
    for name in ("content_layers", "style_layers", "style_layer_weights", "style_blend", "scales"):
        if name in changes:
            if isinstance(changes[name], str | bytes):
                # A string is a sequence too: its characters would be taken for its entries.
                raise OptionsError(name, f"give a list, got the string {shown(changes[name])}")
            changes[name] = tuple(changes[name])
    changes = {name: _plain(name, value) for name, value in changes.items()}
    if "size" in changes and "width" not in changes and "height" not in changes:
        # A size asked for alone replaces a preset's fixed frame (seed's 500 x 300) rather
        # than being ignored beside it.
        changes.update(width=0, height=0)
    options = PRESETS[preset].replace(**changes)
    if limits is not None:
        check_lengths(options, limits)
    _validate(options)
    if limits is not None:
        _within(options, limits)
    return options


def _plain(name: str, value: Any) -> Any:
    """``value`` as the Python number the option ``name`` holds, where it is a number of
    another kind that stands for one (numpy's ``np.int64(512)``, ``np.float32(0.5)``, as a
    sweep made with numpy gives them); anything else as it is, for the checks to name."""
    kind = _NUMBER_KINDS.get(name)
    if kind is None or isinstance(value, bool):
        return value
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) else value
    if kind is float:
        return float(value) if _is_real(value) else value
    if all(_is_real(entry) for entry in value):  # a tuple of floats
        return tuple(float(entry) for entry in value)
    return value


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# The options that hold numbers, and which kind: int, float, or tuple (of floats).
_KINDS: dict[Any, type] = {int: int, int | None: int, float: float, tuple[float, ...]: tuple}
_NUMBER_KINDS = {
    name: _KINDS[hint]
    for name, hint in typing.get_type_hints(StyleOptions).items()
    if hint in _KINDS
}


@dataclass(frozen=True)
class ResolvedOptions:
    """A job's options as the client resolved them, once (``resolve_given``): every value in
    ``options``, and in ``given`` the names the caller set, or that follow from what it sends
    (``init`` "image" beside a starting picture). The request carries the resolved values,
    and the CLI plans from the same object; ``given`` tells which values a caller chose over
    what a server decides by itself (the backbone it serves, its delivery defaults, a
    registered style's options)."""

    options: StyleOptions
    given: frozenset[str]


def resolve_given(given: Mapping[str, Any], *, init_image: bool = False) -> ResolvedOptions:
    """``given`` (StyleOptions fields; None or absent: the preset's) resolved without a
    server's limits, which the server checks; ``init_image``: a starting picture comes with
    them, so that ``init`` is "image" unless given. Raises OptionsError naming the first bad
    field, an unknown name included."""
    chosen = {name: value for name, value in given.items() if value is not None}
    if init_image:
        chosen.setdefault("init", "image")
    overrides = {name: value for name, value in chosen.items() if name != "preset"}
    preset = chosen.get("preset", "default")
    try:
        options = resolve(preset, None, **overrides)
    except OptionsError as error:
        if "backbone" in chosen or error.field not in ("content_layers", "style_layers"):
            raise
        # The server serves its own backbone where the caller names none: layers of the
        # largest network are the server's to judge (VGG19's block5_conv4, say).
        widest = max(BACKBONES, key=lambda name: len(VGG_LAYERS[BACKBONES[name]]))
        options = resolve(preset, None, **overrides, backbone=widest)
    return ResolvedOptions(options, frozenset(chosen))


# The repeated options and the limit that bounds each one's length.
_REPEATED_LIMITS = {
    "scales": "max_scales",
    "content_layers": "max_layers",
    "style_layers": "max_layers",
    "style_layer_weights": "max_layers",
}
# The string options and the string lists, each entry bounded by max_name_length.
_NAMES = ("preset", "backbone", "loss_normalization")
_NAME_LISTS = ("content_layers", "style_layers")
# How much of a caller's value an error message quotes.
_SHOWN_CHARACTERS = 40


def shown(value: object) -> str:
    """``value`` for an error message: its repr (so control characters come escaped), cut to
    a short prefix when long. A status never echoes a caller's long value back: gRPC's
    trailers are bounded, and a message over the bound loses the status it carried."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return f"{text[:_SHOWN_CHARACTERS]}... ({len(text)} characters)"


def check_lengths(options: Any, limits: Limits) -> None:
    """Bounds the lengths of ``options``' lists and strings: a ``StyleOptions``, or the wire
    message with the same field names, checked before anything reads the entries (the server
    checks the message as it arrives, so a list of millions costs it nothing more). Raises
    OptionsError naming the field and the limit."""
    for name, limit in _REPEATED_LIMITS.items():
        count, bound = len(getattr(options, name)), getattr(limits, limit)
        if count > bound:
            raise OptionsError(
                name, f"has {count} entries, more than the {bound} this server allows ({limit})"
            )
    bound = limits.max_name_length
    named = [(name, getattr(options, name)) for name in _NAMES]
    for name in _NAME_LISTS:
        named += [(f"{name}[{i}]", value) for i, value in enumerate(getattr(options, name))]
    for name, value in named:
        if len(value) > bound:
            raise OptionsError(
                name,
                f"is {len(value)} characters, more than the {bound} this server allows "
                "(max_name_length)",
            )


def check_style_size(o: StyleOptions, limits: Limits) -> None:
    """The style pictures of an optimisation are worked at ``style_scale`` times the output's
    longest side: that side obeys ``max_output_side`` as the output's does, so that a style
    costs no more than the largest output would. Raises OptionsError with the largest scale
    that fits."""
    longest = max(o.width, o.height) if o.width and o.height else o.size
    worked = round(longest * o.style_scale)
    if worked > limits.max_output_side:
        largest = math.floor(limits.max_output_side / longest * 100) / 100
        raise OptionsError(
            "style_scale",
            f"{o.style_scale:g} at {longest} px works the style pictures at {worked} px, more "
            f"than the {limits.max_output_side} this server allows (max_output_side): use "
            f"style_scale <= {largest:g} or a smaller size",
        )


def check_video(options: StyleOptions) -> None:
    """What a video's job may not ask for. Raises OptionsError naming the field at fault."""
    if options.time_budget_seconds > 0:
        raise OptionsError(
            "time_budget_seconds",
            "a video has no best picture so far to send: leave it unset (a deadline ends the call)",
        )


def check_pictures(options: StyleOptions, styles: int, init_image: bool) -> None:
    """What ``options`` need of the pictures sent with them: ``styles`` style pictures and an
    ``init_image`` or not. Raises OptionsError naming the field at fault."""
    if styles < 1:
        raise OptionsError("styles", "give at least one style picture")
    if options.style_blend and len(options.style_blend) != styles:
        raise OptionsError(
            "style_blend",
            f"give one weight per style picture ({styles}), got {len(options.style_blend)}",
        )
    if options.init == "image" and not init_image:
        raise OptionsError("init_image", 'init "image" needs a starting picture: send one')
    if init_image and options.method == "feed_forward":
        raise OptionsError(
            "init_image",
            "the instant tier (method feed_forward) paints the content in one pass and starts "
            "from no picture: leave it out, or use method optimization",
        )
    if init_image and options.init != "image":
        # Sent for nothing otherwise: the job would start from its init and never read it.
        raise OptionsError(
            "init_image",
            f'is sent, but init is "{options.init}": set init to "image" to start from it, or '
            "leave it out",
        )


# What a request id may hold: it is echoed in metadata (ASCII only) and in log lines.
MAX_REQUEST_ID_LENGTH = 128
# The port a server listens on and the CLI calls unless told otherwise.
DEFAULT_PORT = 50051
# gRPC's default limit on a received message: the largest response a caller that names no
# size accepts, which proxies on the way often hold to as well.
GRPC_DEFAULT_MESSAGE_BYTES = 4 * 2**20


def check_request_id(request_id: str) -> None:
    """A caller-chosen request id is printable ASCII (no spaces or control characters, which
    would forge log lines) of at most MAX_REQUEST_ID_LENGTH characters."""
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise OptionsError(
            "request_id", f"is {len(request_id)} characters; send at most {MAX_REQUEST_ID_LENGTH}"
        )
    if not all("!" <= c <= "~" for c in request_id):
        raise OptionsError(
            "request_id", "may hold printable ASCII only (letters, digits, punctuation; no spaces)"
        )


# Upper bounds that keep the loss arithmetic finite: float32 holds up to 3.4e38, and a loss
# term (up to about 1e12 with the tutorial's normalisation at the largest sizes) times a weight
# past these, or a total-variation power past MAX_TV_POWER, overflows it. A step beyond
# MAX_LEARNING_RATE pixel units (a picture spans 255) has no meaning.
MAX_WEIGHT = 1e9
MAX_LEARNING_RATE = 1000.0
MAX_TV_POWER = 4.0
MAX_STYLE_SCALE = 4.0
MAX_TIME_BUDGET_SECONDS = 86_400.0
# A region's border is worked with filters this many pixels wide each way (erosion, feathering):
# bounded so that their cost stays a fraction of one evaluation at the largest sizes.
MAX_REGION_BORDER = 64.0


def _number(
    name: str, value: float, high: float, *, low: float = 0.0, positive: bool = False
) -> None:
    """``value`` is a finite number in [``low``, ``high``] (``positive``: above ``low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionsError(name, f"must be a finite number, got {shown(value)}")
    if value < low or (positive and value <= low) or value > high:
        opening = "(" if positive else "["
        raise OptionsError(name, f"must be in {opening}{low:g}, {high:g}], got {shown(value)}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise OptionsError(name, f"must be one of {', '.join(allowed)}; got {shown(value)}")


def _int_range(name: str, value: int, low: int, high: int | None = None) -> None:
    """``value`` is an integer >= ``low`` and, where a limit is known, <= ``high``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise OptionsError(name, f"must be an integer, got {shown(value)}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise OptionsError(name, f"must be an integer {bound}, got {shown(value)}")


def _within(o: StyleOptions, limits: Limits) -> None:
    """The checks that depend on a server's limits."""
    side = (limits.min_output_side, limits.max_output_side)
    _int_range("size", o.size, *side)
    if o.width or o.height:
        _int_range("width", o.width, *side)
        _int_range("height", o.height, *side)
    _int_range("iterations", o.iterations, 1, limits.max_iterations)
    _int_range("evals_per_iteration", o.evals_per_iteration, 1, limits.max_evals_per_iteration)
    _int_range("preview_every", o.preview_every, 0, limits.max_iterations)
    _int_range("preview_size", o.preview_size, limits.min_output_side, limits.max_preview_size)
    if o.method == "optimization":
        check_style_size(o, limits)


def _validate(o: StyleOptions) -> None:
    """The checks that hold on every server."""
    _choice("method", o.method, METHODS)
    _choice("backbone", o.backbone, tuple(BACKBONES))
    _choice("optimizer", o.optimizer, OPTIMIZERS)
    _choice("init", o.init, INITS)
    _choice("precision", o.precision, PRECISIONS)
    _choice("resize", o.resize, RESIZE_FILTERS)
    _choice("loss_normalization", o.loss_normalization, LOSS_NORMALIZATIONS)
    _choice("output_format", o.output_format, OUTPUT_FORMATS)
    _choice("deadline_policy", o.deadline_policy, DEADLINE_POLICIES)
    _number("time_budget_seconds", o.time_budget_seconds, MAX_TIME_BUDGET_SECONDS)
    if o.time_budget_seconds and o.deadline_policy == "strict":
        raise OptionsError(
            "time_budget_seconds", 'a time budget needs deadline_policy "best_so_far"'
        )
    for name in ("width", "height", "preview_every"):
        _int_range(name, getattr(o, name), 0)
    for name in ("size", "iterations", "evals_per_iteration", "preview_size"):
        _int_range(name, getattr(o, name), 1)
    if bool(o.width) != bool(o.height):
        raise OptionsError("width" if not o.width else "height", "set width and height together")
    _int_range("output_quality", o.output_quality, 1, 100)
    longest = max(o.width, o.height) if o.width else o.size
    if o.output_format == "webp" and longest > _WEBP_MAX_SIDE:
        # Refused before the job runs: its encoding would fail at its end.
        raise OptionsError(
            "output_format",
            f"a WebP picture is at most {_WEBP_MAX_SIDE} px a side, and this one would be"
            f" {longest}: ask for png or jpeg, or a size of at most {_WEBP_MAX_SIDE}",
        )
    if o.seed is not None:
        _int_range("seed", o.seed, 0, 2**63 - 1)
    _number("learning_rate", o.learning_rate, MAX_LEARNING_RATE, positive=True)
    for name in ("content_weight", "style_weight", "tv_weight"):
        _number(name, getattr(o, name), MAX_WEIGHT)
    _number("tv_power", o.tv_power, MAX_TV_POWER, positive=True)
    _number("style_scale", o.style_scale, MAX_STYLE_SCALE, positive=True)
    _number("region_border", o.region_border, MAX_REGION_BORDER)
    _number("style_strength", o.style_strength, 1.0)
    _number("temporal_weight", o.temporal_weight, 1.0)
    layers = VGG_LAYERS[BACKBONES[o.backbone]]
    for name in ("content_layers", "style_layers"):
        chosen = getattr(o, name)
        if not chosen:
            raise OptionsError(name, "name at least one layer")
        for layer in chosen:
            if layer not in layers:
                raise OptionsError(
                    name, f"{shown(layer)} is not a layer of {o.backbone}: {', '.join(layers)}"
                )
    if o.style_layer_weights and len(o.style_layer_weights) != len(o.style_layers):
        raise OptionsError(
            "style_layer_weights",
            f"give one weight per style layer ({len(o.style_layers)}), "
            f"got {len(o.style_layer_weights)}",
        )
    for name in ("style_layer_weights", "style_blend"):
        for w in getattr(o, name):
            _number(name, w, MAX_WEIGHT)
        if getattr(o, name) and sum(getattr(o, name)) <= 0:
            raise OptionsError(name, "weights must not all be zero")
    if not o.scales or o.scales[-1] != 1.0:
        raise OptionsError("scales", "give increasing fractions of the output size ending in 1.0")
    for s in o.scales:
        _number("scales", s, 1.0, positive=True)
    if list(o.scales) != sorted(o.scales):
        raise OptionsError("scales", "must be increasing")
