"""Pictures in and out of the engine: sizes, resampling, tensors and colour channels.

Pixels live in the engine as float tensors of shape (1, C, H, W) in 0-255 RGB units; the
network's own normalisation is applied later (``objective``), so that every loss weight and
the optimiser's step size mean the same whatever the backbone.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from styleserve.plan import fit_longest_side
from torch import Tensor

__all__ = [
    "chroma",
    "luminance",
    "recombine",
    "resize",
    "shrink",
    "to_image",
    "to_tensor",
]

# Keras' ``load_img`` samples the nearest pixel; the default mode filters (antialiases) when it
# shrinks, which gives the optimiser a target without aliasing artefacts.
_FILTERS = {"nearest": Image.Resampling.NEAREST, "antialias": Image.Resampling.BICUBIC}
# ITU-R BT.601 (what PIL's "YCbCr" mode uses): luminance weights and chroma scales.
_LUMA = (0.299, 0.587, 0.114)
_CB, _CR = 0.564, 0.713


def resize(image: Image.Image, size: tuple[int, int], method: str) -> Image.Image:
    """``image`` in RGB at ``size`` (width, height), sampled with ``method``."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    return image if image.size == size else image.resize(size, _FILTERS[method])


def shrink(image: Image.Image, longest: int) -> Image.Image:
    """``image`` resampled so that its longest side is ``longest`` (a preview)."""
    return image.resize(fit_longest_side(image.size, longest), Image.Resampling.BICUBIC)


def to_tensor(image: Image.Image, device: torch.device) -> Tensor:
    """An RGB picture as a float32 (1, 3, H, W) tensor in 0-255 units."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def to_image(pixels: Tensor) -> Image.Image:
    """A (1, 3, H, W) tensor in 0-255 units as an RGB picture (clipped, rounded)."""
    array = pixels.detach()[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu()
    return Image.fromarray(array.numpy(), "RGB")


def luminance(rgb: Tensor) -> Tensor:
    """(1, 1, H, W) luminance Y of a (1, 3, H, W) RGB tensor."""
    weights = rgb.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def chroma(rgb: Tensor) -> Tensor:
    """(1, 2, H, W) chroma (Cb, Cr) around zero of a (1, 3, H, W) RGB tensor."""
    y = luminance(rgb)
    return torch.cat(((rgb[:, 2:3] - y) * _CB, (rgb[:, 0:1] - y) * _CR), dim=1)


def recombine(y: Tensor, cbcr: Tensor) -> Tensor:
    """The RGB tensor whose luminance is ``y`` and whose chroma is ``cbcr`` (inverse of the two
    functions above)."""
    cb, cr = cbcr[:, 0:1] / _CB, cbcr[:, 1:2] / _CR
    r, b = y + cr, y + cb
    g = (y - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
    return torch.cat((r, g, b), dim=1)
