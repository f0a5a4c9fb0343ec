"""The bounds of the optimised picture: what the output can encode, for the optimisers to keep.

A picture outside 0-255 (with colour preserved: outside the luminances whose recombination
with the content's chroma stays in it) would be clipped when it is encoded, so the delivered
picture would not score what the job reported. Every evaluation sees the picture clamped into
the box, its gradient passed straight through, and every step ends on the clamped picture
(``optimize``). The clamp is applied a window at a time where the objective works in tiles
(``objective``), so that no whole clamped copy of a print-size picture is held.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["Box"]


class Box:
    """Per-pixel bounds ``lo <= x <= hi`` of the optimised picture (tensors that broadcast)."""

    def __init__(self, lo: Tensor, hi: Tensor) -> None:
        self.lo, self.hi = lo, hi

    def bounded(self, x: Tensor) -> Tensor:
        """A copy of ``x`` moved into the box."""
        with torch.no_grad():
            return x.clamp(self.lo, self.hi)

    def project_(self, x: Tensor) -> None:
        """Moves ``x`` into the box, in place."""
        with torch.no_grad():
            x.clamp_(self.lo, self.hi)

    def crop(self, crop: Callable[[Tensor], Tensor]) -> Box:
        """The box of the part of the picture that ``crop`` cuts out (per-pixel bounds cut
        alike; uniform ones, 0-dimensional, as they are)."""
        return Box(*(b if b.dim() == 0 else crop(b) for b in (self.lo, self.hi)))

    def straight(self, x: Tensor) -> Tensor:
        """``x`` moved into the box, differentiably: its gradient is passed straight through,
        as the gradient of the clamped picture is taken for the variable's (``Evaluator``)."""
        result: Tensor = _StraightThrough.apply(x, self.lo, self.hi)
        return result

    def parts(self, size: int) -> Iterator[Box]:
        """The box of each ``size``-element chunk of the flattened picture, as
        ``x.view(-1).split(size)`` cuts it (per-pixel bounds have the picture's shape)."""
        if self.lo.dim() == 0 and self.hi.dim() == 0:
            return itertools.repeat(self)
        cut = (b.expand(self.lo.shape).reshape(-1).split(size) for b in (self.lo, self.hi))
        return itertools.starmap(Box, zip(*cut, strict=True))


class _StraightThrough(torch.autograd.Function):
    """A clamp whose backward pass is the identity (``Box.straight``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None
