"""The instant tier: one pass of an arbitrary-style feed-forward network in onnxruntime.

Magenta's arbitrary stylisation pair (Ghiasi et al. 2017) maps a style picture to a 100-number
style vector and a content picture plus that vector to the stylised picture, in a fraction of
a second where the optimisation takes tens of seconds. The sessions are made once per process
and shared by concurrent jobs (onnxruntime's ``run`` is thread-safe); their thread pools do not
spin while idle, so that an instant job between optimisation steps does not steal the cores
that torch is about to use.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image, ImageOps
from styleserve.options import StyleOptions
from styleserve.plan import output_size
from styleserve_export.artifact import FeedForwardArtifact

from styleserve_server.engine.imaging import resize
from styleserve_server.engine.prepared import PreparedStyle
from styleserve_server.engine.regions import blend as blend_regions
from styleserve_server.engine.regions import keep_content, keep_weight

__all__ = ["CPU_PROVIDER", "CUDA_PROVIDER", "FeedForward"]

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


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

    def __init__(self, artifact: FeedForwardArtifact, device: torch.device, threads: int) -> None:
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
        self._predict = ort.InferenceSession(artifact.predict, options, providers=providers)
        self._transform = ort.InferenceSession(artifact.transform, options, providers=providers)
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
    ) -> Image.Image:
        """``content`` in the blended style of ``styles`` (or of the prepared ``style``
        standing for them, which keeps its vector) at the options' output size, with their
        blend, style strength and colour preservation. With ``regions`` (one boolean mask per
        style at the output's size), each style's own picture paints its region instead, and
        the pixels in none keep the content (``engine.regions``): one pass per style."""
        width, height = output_size(content.size, options)
        working = resize(content, (width, height), options.resize)
        own = self.style_vector(content) if options.style_strength < 1.0 else None
        if regions is None:
            if style is None:
                vector = self.styles_vector(styles, options.style_blend)
            else:
                blend = options.style_blend
                vector = style.vector(functools.partial(self.styles_vector, blend=blend))
            result = self._paint(working, _toward(vector, own, options.style_strength))
        else:
            pictures = styles if style is None else style.pictures()
            painted = [
                self._paint(working, _toward(self.style_vector(p), own, options.style_strength))
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

    def _paint(self, working: Image.Image, vector: np.ndarray) -> Image.Image:
        """``working`` (at the output's size) through the transform network with ``vector``."""
        width, height = working.size
        pixels = _nhwc(working)
        pad_h, pad_w = (-height) % self._multiple, (-width) % self._multiple
        if pad_h or pad_w:
            pixels = np.pad(pixels, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        (out,) = self._transform.run(
            None, {self._content_input: pixels, self._vector_input: vector}
        )
        rgb = np.clip(out[0, :height, :width] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(rgb, "RGB")

    def warm_up(self) -> None:
        """One small picture through both networks, so that the first real one pays for no
        allocation or kernel choice (and a broken provider fails before SERVING)."""
        picture = Image.radial_gradient("L").convert("RGB").resize((64, 48))
        self.picture(picture, [picture], StyleOptions(size=64))
