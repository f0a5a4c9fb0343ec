"""Pixels to VGG features: the backbone's normalisation, the precision and the memory layout.

The backbone is loaded once per process and shared by concurrent jobs. A job that runs in
bfloat16/float16 uses a converted copy of it (cast, channels-last), made once per process and
shared as well, so that no job casts 15 M weights on every evaluation or touches the original.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Sequence

import torch
from styleserve_export.artifact import Backbone
from torch import Tensor, nn

__all__ = ["FeatureNet"]

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

_converted: weakref.WeakKeyDictionary[nn.Module, dict[tuple[torch.dtype, bool], nn.Module]] = (
    weakref.WeakKeyDictionary()
)
_converted_lock = threading.Lock()


def _channels_last(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the network runs channels-last (NHWC) by default. oneDNN's CPU convolutions
    want it in every precision: with NCHW bf16 gains nothing, and float32 pays a reorder
    around every convolution. On a 2-core AVX2 EPYC (benchmarks/layout.py, float32)
    channels-last took 0.89x NCHW's time for a 2 MP evaluation in tiles, 0.84x for a 1 MP
    forward pass, 0.94x for the Keras example's evaluation at 500x300. cuDNN's tensor-core
    kernels want it in half precisions; float32 on a GPU keeps NCHW until gpu_check.py has
    measured both there."""
    return device.type == "cpu" or dtype != torch.float32


def _network(net: nn.Module, dtype: torch.dtype, channels_last: bool) -> nn.Module:
    if dtype == torch.float32 and not channels_last:
        return net
    key = (dtype, channels_last)
    with _converted_lock:
        variants = _converted.setdefault(net, {})
        if key not in variants:
            clone = copy.deepcopy(net).to(dtype=dtype)
            if channels_last:
                # torch's stub overloads of Module.to leave out memory_format, which Module.to
                # accepts and documents: to(memory_format=torch.channels_last).
                clone = clone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            variants[key] = clone
        return variants[key]


class FeatureNet:
    """``backbone``'s network at one precision: maps (1, 3, H, W) 0-255 RGB pixels to features."""

    def __init__(
        self, backbone: Backbone, precision: str, *, channels_last: bool | None = None
    ) -> None:
        """``channels_last``: the network's memory layout (None: the device's and precision's
        default, which benchmarks/layout.py measures against the other)."""
        norm = backbone.normalization
        self.device = backbone.device
        # "vgg16" or "vgg19": the layers' strides and receptive fields follow from it.
        self.arch = backbone.arch
        self.dtype = _DTYPES[precision]
        self.channels_last = (
            _channels_last(self.dtype, self.device) if channels_last is None else channels_last
        )
        self._net = _network(backbone.net, self.dtype, self.channels_last)
        self._bgr = norm.channel_order == "BGR"
        self._scale = norm.scale / 255.0
        self._mean = torch.tensor(norm.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm.std, device=self.device).view(1, 3, 1, 1)
        mean_rgb = norm.mean[::-1] if self._bgr else norm.mean
        # The network's mean colour in 0-255 RGB: noise is centred on it.
        self.mean_pixel = tuple(m / norm.scale * 255.0 for m in mean_rgb)

    def __call__(self, pixels: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        x = pixels.flip(1) if self._bgr else pixels
        x = ((x * self._scale - self._mean) / self._std).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._net(x, layers)
