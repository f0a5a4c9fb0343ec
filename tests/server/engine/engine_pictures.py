"""Synthetic pictures for the engine tests: made with numpy, so the tests need no files."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["landscape", "stripes"]


def landscape(width: int, height: int) -> Image.Image:
    """A smooth, colourful picture with one hard edge: something to keep the structure of."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
    b = np.where(disc, 220, 30)
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


def stripes(width: int, height: int, colours: tuple[tuple[int, int, int], ...]) -> Image.Image:
    """Diagonal stripes cycling through ``colours``: a style with a strong texture."""
    y, x = np.mgrid[0:height, 0:width]
    index = ((x + y) // 4) % len(colours)
    return Image.fromarray(np.asarray(colours, dtype=np.uint8)[index], "RGB")
