"""The instant tier: one pass of an arbitrary-style feed-forward network in onnxruntime.

Magenta's arbitrary stylisation pair (Ghiasi et al. 2017) maps a style picture to a 100-number
style vector and a content picture plus that vector to the stylised picture, in a fraction of
a second where the optimisation takes tens of seconds. The sessions are made once per process
and shared by concurrent jobs (onnxruntime's ``run`` is thread-safe); their thread pools do not
spin while idle, so that an instant job between optimisation steps does not steal the cores
that torch is about to use.

Pictures larger than ``tile_pixels`` (and, on the CPU, any from 2**24 pixels, which onnxruntime
cannot run whole) are painted in tiles that share the whole picture's normalisation
(``engine.feed_forward_tiles``): the same pixels, in bounded memory. ``instant_peak_bytes``
predicts the memory either way, for admission.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image, ImageOps
from styleserve.options import StyleOptions
from styleserve.plan import output_size
from styleserve_export.artifact import FeedForwardArtifact

from styleserve_server.engine.feed_forward_tiles import (
    PLANE_LIMIT,
    Box,
    StagedTransform,
    Unsupported,
    plan_tiles,
)
from styleserve_server.engine.feed_forward_tiles import to_rgb as _to_rgb
from styleserve_server.engine.imaging import resize
from styleserve_server.engine.prepared import PreparedStyle
from styleserve_server.engine.records import stop_if_cancelled
from styleserve_server.engine.regions import blend as blend_regions
from styleserve_server.engine.regions import keep_content, keep_weight

__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "INSTANT_TILE_PIXELS",
    "MIN_INSTANT_TILE_PIXELS",
    "FeedForward",
    "instant_peak_bytes",
]

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# The tile budget (pixels, halos included) of pictures that cannot run whole when no budget is
# set (on the CPU, PLANE_LIMIT pixels and more). Small tiles are the fastest and the smallest:
# 12 MP on the 2-core EPYC took 4.25, 3.90 and 4.45 s in tiles of 1/8, 1/4 and 1/2 Mi pixels,
# 4.63 s whole (the tiles' working set stays in cache), at 0.32 GiB above the loaded process in
# quarter-Mi tiles against 1.76 GiB whole.
INSTANT_TILE_PIXELS = 1 << 18
# Smaller budgets are raised to this: below it the halos (36 pixels a side in the first stage)
# more than double the work.
MIN_INSTANT_TILE_PIXELS = 1 << 16


# Peak resident memory of one picture above the loaded, warmed-up process, measured with
# benchmarks/instant_big.py on the 2-core AMD EPYC (avx512, 24 GB, onnxruntime 1.31.1 CPU) at
# 1 to 33 MP, and set at or above every measurement (up to 1.6x where the allocator's
# fragmentation varied from run to run):
_GIB = 1 << 30
# The content at the output's size, its array, the result's array and picture.
_PICTURE_BYTES_PER_PIXEL = 12
# One whole pass (1 MP: 0.27 GiB, 4 MP: 0.67 to 0.90, 8 MP: 1.20, 12 MP: 1.67 to 1.76).
_WHOLE_BYTES_PER_PIXEL = 157
_WHOLE_BYTES = int(0.3 * _GIB)
# Tiles: the int8 tensors kept between stages, and the working set of a tile, which grows
# faster up to a Mi pixels (tiles of 1/4, 1 and 4 Mi pixels: 0.32, 0.59 and 0.81 GiB at 12 MP,
# 0.62, 0.92 and 1.42 GiB at 33 MP).
_KEPT_BYTES_PER_PIXEL = 8
_TILE_BYTES = int(0.06 * _GIB)
_TILE_BYTES_PER_PIXEL = (0.45 * _GIB / (1 << 20), 0.2 * _GIB / (1 << 20))  # to 1 Mi, beyond
# Regions: every style's picture, then the blend's float32 stack and feathered weights
# (12 MP in 1 Mi tiles: 0.59, 1.29 and 1.60 GiB with 1, 2 and 3 styles).
_REGION_BYTES_PER_PIXEL = (6, 26)  # once, per style


def instant_peak_bytes(
    width: int, height: int, *, tile_pixels: int | None = None, styles: int = 1
) -> int:
    """The peak resident memory (bytes) that one instant picture of ``width`` x ``height``
    adds to the loaded server on the CPU, painted by ``styles`` region styles (1: no regions)
    with ``FeedForward``'s ``tile_pixels``: whole where it would run whole, else in tiles.
    An upper bound of the measurements (see above), for admission by memory; a GPU's memory is
    not modelled."""
    multiple = 4  # the transform's, in Magenta's contract
    pixels = -(-width // multiple) * multiple * (-(-height // multiple) * multiple)
    budget = _tile_budget(pixels, tile_pixels)
    if budget is None:
        work = _WHOLE_BYTES_PER_PIXEL * pixels + _WHOLE_BYTES
    else:
        first, beyond = _TILE_BYTES_PER_PIXEL
        tile = first * min(budget, 1 << 20) + beyond * max(budget - (1 << 20), 0)
        work = _KEPT_BYTES_PER_PIXEL * pixels + _TILE_BYTES + int(tile)
    regions = 0
    if styles > 1:
        once, each = _REGION_BYTES_PER_PIXEL
        regions = (once + each * styles) * pixels
    return _PICTURE_BYTES_PER_PIXEL * pixels + work + regions


def _tile_budget(pixels: int, tile_pixels: int | None) -> int | None:
    """The tile budget of a padded picture of ``pixels`` pixels (None: it runs whole)."""
    if pixels < PLANE_LIMIT and (tile_pixels is None or pixels <= tile_pixels):
        return None
    return max(tile_pixels or INSTANT_TILE_PIXELS, MIN_INSTANT_TILE_PIXELS)


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning workers would keep the cores busy after every run, slowing the torch jobs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    return options


def _nhwc(image: Image.Image) -> np.ndarray:
    """An RGB picture as the networks' float32 (1, H, W, 3) input in 0..1."""
    return np.asarray(image.convert("RGB"), dtype=np.float32)[np.newaxis] / 255.0


def _toward(vector: np.ndarray, own: np.ndarray | None, strength: float) -> np.ndarray:
    """The style ``vector`` moved ``strength`` of the way from the content's ``own`` (None at
    full strength)."""
    if own is None:
        return vector
    return strength * vector + (1.0 - strength) * own


class FeedForward:
    """The style and transform networks of one artifact, ready to run on ``device``."""

    def __init__(
        self,
        artifact: FeedForwardArtifact,
        device: torch.device,
        threads: int,
        *,
        tile_pixels: int | None = None,
    ) -> None:
        """``tile_pixels``: the most pixels (halos included) one pass of the transform may
        hold; bigger pictures run in tiles that share the whole picture's normalisation
        (``engine.feed_forward_tiles``), with the same result. None: whole pictures whenever
        the provider can run them (on the CPU, up to ``PLANE_LIMIT`` pixels), tiles of
        ``INSTANT_TILE_PIXELS`` beyond. ``instant_peak_bytes`` predicts the memory either
        way."""
        self.name = artifact.name
        self.sha256 = artifact.sha256
        contract = artifact.manifest["contract"]
        # The style network was trained on (and its graph fixes) square style pictures.
        self._style_side = int(contract["style_size"])
        # The transform halves the picture twice and doubles it back, rounding up: padded to
        # this multiple, its output has the input's size exactly.
        self._multiple = int(contract["size_multiple"])
        providers: list[str | tuple[str, dict[str, str]]] = [CPU_PROVIDER]
        if device.type == "cuda":
            # The CUDA and cuDNN libraries of the NVIDIA wheels that torch's CUDA build and
            # onnxruntime-gpu's cuda extra share (locks/image-cuda.txt), found for onnxruntime
            # too (no separate CUDA install in the image).
            ort.preload_dlls()
            providers.insert(0, (CUDA_PROVIDER, {"device_id": str(device.index or 0)}))
        options = _session_options(threads)
        self.tile_pixels = tile_pixels
        self._staged_args = (artifact.transform, threads, providers)
        self._staged: StagedTransform | None = None
        self._staged_built = False
        self._staged_lock = threading.Lock()
        self._predict = ort.InferenceSession(artifact.predict, options, providers=providers)
        # Without an arena the transform gives its memory back after each picture: with one,
        # 12 MP pictures left 4.1 GiB held for good (2.2 GiB peak without, 4.6 GiB with, the
        # arena's chunks fragmenting), which no per-job memory budget could account for; 512 px
        # pictures take as long either way.
        whole = _session_options(threads)
        whole.enable_cpu_mem_arena = False
        self._transform = ort.InferenceSession(artifact.transform, whole, providers=providers)
        # onnxruntime-gpu lists its CUDA provider even where CUDA cannot load; the session
        # says what it really got.
        self.provider = self._transform.get_providers()[0]
        if device.type == "cuda" and self.provider != CUDA_PROVIDER:
            log.warning(
                "onnxruntime could not use CUDA on %s (are the NVIDIA CUDA 13 wheels of "
                "styleserve[server,cuda] installed?): the instant tier runs on the CPU",
                device,
            )
        (self._style_input,) = (i.name for i in self._predict.get_inputs())
        self._content_input, self._vector_input = (i.name for i in self._transform.get_inputs())

    def style_vector(self, picture: Image.Image) -> np.ndarray:
        """The (1, 1, 1, 100) style vector of ``picture``, centre-cropped to a square first so
        that its brush strokes are not stretched."""
        side = self._style_side
        square = ImageOps.fit(picture.convert("RGB"), (side, side), Image.Resampling.BICUBIC)
        (vector,) = self._predict.run(None, {self._style_input: _nhwc(square)})
        return vector

    def styles_vector(self, styles: Sequence[Image.Image], blend: Sequence[float]) -> np.ndarray:
        """The style vectors of ``styles`` blended by ``blend`` (empty: equal shares)."""
        shares = np.asarray(blend or [1.0] * len(styles), dtype=np.float32)
        shares /= shares.sum()
        vector: np.ndarray = sum(
            s * self.style_vector(style) for s, style in zip(shares, styles, strict=True)
        )
        return vector

    def picture(
        self,
        content: Image.Image,
        styles: Sequence[Image.Image],
        options: StyleOptions,
        *,
        style: PreparedStyle | None = None,
        regions: Sequence[np.ndarray] | None = None,
        cancel: threading.Event | None = None,
    ) -> Image.Image:
        """``content`` in the blended style of ``styles`` (or of the prepared ``style``
        standing for them, which keeps its vector) at the options' output size, with their
        blend, style strength and colour preservation. With ``regions`` (one boolean mask per
        style at the output's size), each style's own picture paints its region instead, and
        the pixels in none keep the content (``engine.regions``): one pass per style. Raises
        JobCancelled within one tile's pass of ``cancel`` being set (a whole picture's pass
        runs to its end)."""
        width, height = output_size(content.size, options)
        working = resize(content, (width, height), options.resize)
        own = self.style_vector(content) if options.style_strength < 1.0 else None
        if regions is None:
            if style is None:
                vector = self.styles_vector(styles, options.style_blend)
            else:
                blend = options.style_blend
                vector = style.vector(functools.partial(self.styles_vector, blend=blend))
            result = self._paint(working, _toward(vector, own, options.style_strength), cancel)
        else:
            pictures = styles if style is None else style.pictures()
            painted = [
                self._paint(
                    working, _toward(self.style_vector(p), own, options.style_strength), cancel
                )
                for p in pictures
            ]
            result = blend_regions(painted, regions, options.region_border)
        if options.preserve_color:
            # The network's luminance with the content's chroma, as the optimisation does.
            y = result.convert("YCbCr").getchannel("Y")
            _, cb, cr = working.convert("YCbCr").split()
            result = Image.merge("YCbCr", (y, cb, cr)).convert("RGB")
        if regions is not None:
            keep = keep_weight(regions, options.region_border, torch.device("cpu"))
            result = keep_content(result, working, keep)
        return result

    def _paint(
        self, working: Image.Image, vector: np.ndarray, cancel: threading.Event | None = None
    ) -> Image.Image:
        """``working`` (at the output's size) through the transform network with ``vector``,
        whole or in tiles (``tile_pixels``), stopping between tiles once ``cancel`` is set."""
        stop_if_cancelled(cancel)
        width, height = working.size
        pixels = np.asarray(working.convert("RGB"))
        pad_h, pad_w = (-height) % self._multiple, (-width) % self._multiple
        if pad_h or pad_w:
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        budget = _tile_budget(pixels.shape[0] * pixels.shape[1], self.tile_pixels)
        staged = None if budget is None else self._staged_transform()
        if staged is not None and budget is not None:
            rgb = staged.run(pixels, vector, budget, cancel)
        else:
            # Scaled in place: the float picture is the biggest buffer besides the network's.
            content = pixels[np.newaxis].astype(np.float32)
            content /= 255.0
            (out,) = self._transform.run(
                None, {self._content_input: content, self._vector_input: vector}
            )
            del content
            rgb = _to_rgb(out[0])
        return Image.fromarray(np.ascontiguousarray(rgb[:height, :width]), "RGB")

    def tiles(self, width: int, height: int) -> list[Box]:
        """The tiles (top, left, bottom, right, before halos) that a ``width`` x ``height``
        output is painted in, at its size padded to the network's multiple; [] when it runs
        whole. Where seams would show, if anywhere."""
        padded_w, padded_h = (
            -(-side // self._multiple) * self._multiple for side in (width, height)
        )
        budget = _tile_budget(padded_w * padded_h, self.tile_pixels)
        staged = None if budget is None else self._staged_transform()
        if staged is None or budget is None:
            return []
        return plan_tiles(padded_h, padded_w, budget, staged.halo, self._multiple)

    def peak_bytes(self, width: int, height: int, styles: int = 1) -> int:
        """``instant_peak_bytes`` with this instance's ``tile_pixels``."""
        return instant_peak_bytes(width, height, tile_pixels=self.tile_pixels, styles=styles)

    def _staged_transform(self) -> StagedTransform | None:
        """The transform cut into tile-wise stages, built on first use (27 small sessions for
        Magenta's: 0.2 s, 17 MB), None where the graph cannot be cut."""
        with self._staged_lock:
            if not self._staged_built:
                transform, threads, providers = self._staged_args
                options = _session_options(threads)
                options.enable_cpu_mem_arena = False  # as the whole transform's, and per stage
                try:
                    self._staged = StagedTransform(
                        transform,
                        content=self._content_input,
                        vector=self._vector_input,
                        multiple=self._multiple,
                        options=options,
                        providers=providers,
                    )
                except Unsupported as err:
                    log.warning("the instant tier cannot tile %s (%s): whole only", self.name, err)
                self._staged_built = True
            return self._staged

    def warm_up(self) -> None:
        """One small picture through both networks, so that the first real one pays for no
        allocation or kernel choice (and a broken provider fails before SERVING)."""
        picture = Image.radial_gradient("L").convert("RGB").resize((64, 48))
        self.picture(picture, [picture], StyleOptions(size=64))
