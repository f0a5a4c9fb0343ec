"""A seam measure: whether a picture made in tiles shows where the tiles met.

A seam is a jump between neighbouring pixels along a tile's border that the rest of the
picture does not have. The measure is the mean gradient magnitude (absolute difference of
neighbouring pixels, over the channels) across the borders, divided by the same mean across
every other pair of neighbours: 1.0 means the borders look like anywhere else; a visible seam
reads well above it. Used by the big-picture benchmark and by the tests of tiled inference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

__all__ = ["borders", "seam_ratio"]


def _across(picture: np.ndarray, cuts: Sequence[int]) -> tuple[float, float]:
    """Mean |difference| between columns ``c - 1`` and ``c`` for the ``cuts``, and between
    every other pair of neighbouring columns."""
    steps = np.abs(np.diff(picture, axis=1)).mean(axis=(0, 2))  # one per column pair
    on = np.zeros(steps.shape[0], dtype=bool)
    on[[c - 1 for c in cuts if 0 < c < picture.shape[1]]] = True
    if not on.any() or on.all():
        raise ValueError("the cuts must fall strictly inside the picture and not everywhere")
    return float(steps[on].mean()), float(steps[~on].mean())


def seam_ratio(image: Image.Image, columns: Sequence[int] = (), rows: Sequence[int] = ()) -> float:
    """How much sharper ``image`` changes across the tile borders at x = ``columns`` and
    y = ``rows`` (the first pixel of each tile after the first) than elsewhere: the mean
    gradient magnitude on those borders over that inside the tiles."""
    picture = np.asarray(image.convert("RGB"), dtype=np.float64)
    on: list[float] = []
    off: list[float] = []
    if columns:
        a, b = _across(picture, columns)
        on.append(a)
        off.append(b)
    if rows:
        a, b = _across(picture.transpose(1, 0, 2), rows)
        on.append(a)
        off.append(b)
    if not on:
        raise ValueError("name at least one border")
    return float(np.mean(on) / max(np.mean(off), 1e-12))


def borders(tiles: Iterable[Sequence[int]], width: int, height: int) -> tuple[list[int], list[int]]:
    """The inner borders of ``tiles`` (each ``(top, left, bottom, right)``) in a picture of
    ``width`` x ``height``: the columns and the rows where one tile meets the next."""
    tiles = list(tiles)
    columns = sorted({left for _, left, _, _ in tiles if 0 < left < width})
    rows = sorted({top for top, _, _, _ in tiles if 0 < top < height})
    return columns, rows
