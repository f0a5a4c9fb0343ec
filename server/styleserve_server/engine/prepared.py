"""What a style kept from job to job looks like to the engine.

The optimisation (``engine.style``, ``engine.job``) and the instant tier (``engine.feed_forward``)
both take a ``PreparedStyle`` (a registered style, held by the server's ``style_cache``) in place
of style pictures: its types live in this leaf, so that neither of them imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["Grams", "PreparedStyle", "StyleKey", "StyleVector"]

Grams = dict[str, Tensor]
"""Blended Gram matrices by layer name."""


@dataclass(frozen=True)
class StyleKey:
    """What one stage's style targets depend on besides the pictures and their blend."""

    # The box each style picture is resized into: exactly (``stretch``: the tutorial's
    # stretching to the stage's shape), or keeping its aspect ratio with the box's side as
    # its longest.
    box: tuple[int, int]
    stretch: bool
    resize: str
    layers: tuple[str, ...]
    normalization: str
    # The network's precision (its memory layout follows from it).
    dtype: torch.dtype


class PreparedStyle(Protocol):
    """Style pictures whose targets are kept from job to job (a registered style)."""

    @property
    def count(self) -> int:
        """How many pictures the style blends."""
        ...

    def pictures(self) -> list[Image.Image]:
        """The style pictures, decoded."""
        ...

    def grams(self, key: StyleKey, compute: Callable[[Sequence[Image.Image]], Grams]) -> Grams:
        """The targets for ``key``: the kept ones, else ``compute`` of the pictures (kept
        from then on where there is room)."""
        ...

    def vector(self, compute: Callable[[Sequence[Image.Image]], np.ndarray]) -> np.ndarray:
        """The feed-forward style vector: the kept one, else ``compute`` of the pictures."""
        ...


StyleVector = Callable[[Sequence[Image.Image], Sequence[float]], np.ndarray]
"""The instant tier's style vector of pictures blended by weights
(``engine.feed_forward.FeedForward.styles_vector``)."""
