"""What a job's memory peaks at, known before it runs: for admitting jobs against a budget.

A job's memory is what each stage keeps per pixel of its own (the picture, its gradient, the
content term's targets, the optimiser's state: ``optimize.state_bytes``) plus the working
memory of the network's passes, which tiles (``engine.tiles``) bound to the largest tile's
whatever the picture's size. The per-pixel costs of the passes were measured; the rest is
counted from the tensors the engine holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence

from styleserve.options import StyleOptions
from styleserve_export.vgg import conv_shapes

from styleserve_server.engine.optimize import state_bytes
from styleserve_server.engine.regions import footprints

__all__ = [
    "TEMPORAL_BYTES",
    "predicted_peak_bytes",
    "registration_peak_bytes",
    "return_freed_memory",
]

# glibc's mallopt parameter for the size above which an allocation gets its own mapping.
_M_MMAP_THRESHOLD = -3
# Tensors from 4 MiB up (a tile's layers are 10 to 300 MB) mapped apart: measured at 4 MP, an
# evaluation peaked at 1.63 GB with it and at 1.94-2.00 GB without, and a default-preset job at
# 12 MP at 2.57 GB with it and 3.78 GB without; its evaluations were no slower (within this
# shared 2-core machine's noise; a 64 KiB threshold cost about a third more time).
_MAPPED_BYTES = 4 << 20

# What one evaluation (loss and gradient) of VGG16 on the default preset's layers holds at its
# peak per pixel of a tile's window, the picture and its gradient apart, by the network's
# precision; and what a forward pass without autograd holds (the content's and the style
# pictures' targets). Measured on a 2-core AMD EPYC (torch 2.13, oneDNN) untiled at 0.5 and
# 1 MP: 1.16 GB and 0.50 GB per megapixel in bfloat16, 1.95 and 0.81 in float32. float16 (GPUs
# only) is taken to keep what bfloat16 keeps; on a GPU these want measuring again.
_EVALUATION_BYTES = {"bfloat16": 1136, "float16": 1136, "float32": 1926}
_FORWARD_BYTES = {"bfloat16": 484, "float16": 484, "float32": 778}
# What a whole picture's float32 RGB tensor costs per pixel.
_RGB = 12
# A region's guides: one float32 per cell of each style layer (4/3 of the pixels at most).
_GUIDE = 6
# What the tensors counted here leave out (the allocator's and oneDNN's working memory, the
# copies of a tile's interiors; the decoded pictures, which the service adds, were in these
# measurements too: the content's, 4 bytes a pixel): benchmarks/big.py measured peaks
# 0.14, 0.15 and 0.22 GiB above the rest at 1, 4 and 12 MP (2-core Sapphire Rapids, bfloat16),
# and 0.6 GiB above what the compact L-BFGS's tensors add up to at 24 MP.
_UNCOUNTED = 256 * 2**20
_UNCOUNTED_PIXEL = 16
# What a consistent video (``engine.temporal``) holds beyond its frames' jobs, per pixel of its
# frames: the previous frame's input and output, the flows DIS starts the next pair from, the
# carried frame and where it holds, the temporal term's target, and for a moment DIS's pyramids
# and the reliability check's arrays. benchmarks/video_memory.py measured 49, 63 and 58 bytes
# more at 1, 4 and 8 MP in the instant tier, 74, 97 and 94 in the optimisation (2-core AMD
# EPYC); a video's job is admitted with this much on top, its carrying counted as if it
# overlapped the job's peak (it comes between two frames' jobs). On a GPU most of it (all but
# the temporal term's target) is host memory, which a device's budget overcounts by it;
# benchmarks/gpu_check.py prints a consistent video's device peak beside a picture job's.
TEMPORAL_BYTES = 128


def _window(height: int, width: int, tile_pixels: int | None) -> int:
    """The most pixels of a ``height`` x ``width`` picture's tiles: the tile budget, which
    every window keeps within (``tiles.plan_tiles``), or the whole picture when it is smaller.
    Arithmetic, not the plan itself: the service predicts peaks dozens of times per request
    while it looks for the largest size that fits."""
    pixels = height * width
    return pixels if tile_pixels is None else min(pixels, tile_pixels)


def predicted_peak_bytes(
    stages: Sequence[tuple[int, int]],
    options: StyleOptions,
    precision: str,
    tile_pixels: int | None,
    *,
    regions: int = 0,
    styles: int = 1,
) -> int:
    """The most memory a job holds at once beyond its process's (which has the backbone loaded
    and converted to ``precision``): for the job's ``stages`` (width, height), its
    ``options`` (layers, optimiser and its history, style scale, colour preservation), the
    network's ``precision`` ("bfloat16", "float16" or "float32"), the ``tile_pixels`` it runs
    with (None: untiled), its count of ``regions`` (0: none) and of ``styles`` pictures. Built
    on the per-pixel costs measured on VGG16 on a CPU (``_EVALUATION_BYTES``): what a stage
    keeps per pixel of its own (the picture, the content term's targets, the guides), plus the
    larger of its set-up's memory (the content, the style pictures at the stage's size times
    ``style_scale``, a square at most, and a forward pass of its largest tile) and its
    evaluations' (the gradient, the optimiser's state, ``optimize.state_bytes``, and a
    forward and backward pass of the largest tile: the point evaluated is the variable
    itself). Measured peaks of
    default-preset jobs stayed 7-12% under it at 1, 4, 12 and 24 MP in a process that had
    called ``return_freed_memory`` (without, glibc's heaps added up to 1.1 GB at 12 MP)."""
    reach = footprints("vgg16")
    shapes = conv_shapes("vgg16")
    value_bytes = 4 if precision == "float32" else 2
    targets = sum(shapes[k][0][0] * value_bytes / reach[k][0] ** 2 for k in options.content_layers)
    channels = 1 if options.preserve_color else 3
    variable = 4 * channels
    # Through the whole stage: the picture variable, the content term's targets, the guides,
    # and with colour preserved the content's chroma and the variable's bounds.
    kept = variable + targets + _GUIDE * regions + (16 if options.preserve_color else 0)
    kept += _UNCOUNTED_PIXEL
    peak = 0
    for width, height in stages:
        pixels = width * height
        side = _style_side(width, height, options)
        window = _window(height, width, tile_pixels)
        # The content (RGB and as a variable) and the style pictures, with a forward pass.
        setup = (_RGB + variable) * pixels + styles * _RGB * side * side
        setup += _FORWARD_BYTES[precision] * max(window, _window(side, side, tile_pixels))
        # The rendered picture's gradient (and, with colour preserved, the variable's, which is
        # smaller), the optimiser's state, and a forward and backward pass; the point evaluated
        # is the variable itself, clamped a window at a time (``box``).
        gradients = _RGB + (variable if options.preserve_color else 0)
        evaluation = gradients * pixels + _EVALUATION_BYTES[precision] * window
        evaluation += state_bytes(options.optimizer, options.evals_per_iteration, channels * pixels)
        peak = max(peak, int(kept * pixels + max(setup, evaluation)))
    return _UNCOUNTED + peak


def registration_peak_bytes(
    stages: Sequence[tuple[int, int]],
    options: StyleOptions,
    precision: str,
    tile_pixels: int | None,
    *,
    styles: int,
) -> int:
    """The most memory a style's registration (``engine.style.prepare``) holds at once beyond
    its process's, as ``predicted_peak_bytes`` counts a job's set-up: at each of its
    ``stages`` (width, height), its ``styles`` pictures at the stage's size times
    ``style_scale`` (a square at most) as float32 RGB, which the targets are computed from
    together, and a forward pass of one's largest tile."""
    peak = 0
    for width, height in stages:
        side = _style_side(width, height, options)
        pictures = styles * _RGB * side * side
        peak = max(peak, pictures + _FORWARD_BYTES[precision] * _window(side, side, tile_pixels))
    return _UNCOUNTED + peak


def _style_side(width: int, height: int, options: StyleOptions) -> int:
    """The longest side of a stage's style pictures (``engine.style.resized_style``)."""
    return round(max(width, height) * options.style_scale)


def return_freed_memory() -> bool:
    """Has the C allocator give every allocation of 4 MiB or more its own mapping, returned to
    the system when freed; whether it could (glibc only). Without it glibc raises its mapping
    threshold to the size of what was freed, so a job's tiles, each sized a little apart, leave
    their freed layers in its heaps: the process's resident memory then outgrows what the job
    holds (``predicted_peak_bytes``) by a third. A process-wide setting, for a service to make
    once at start-up (``MALLOC_MMAP_THRESHOLD_=4194304`` in its environment does the same)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except AttributeError:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MAPPED_BYTES))
