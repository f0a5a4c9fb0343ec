"""The three terms of the objective, as pure functions of tensors.

Two normalisations exist. ``tutorial`` reproduces the Keras example to the letter: sums of
squares, and style layers divided by ``4 * 3**2 * (H*W)**2`` with the *image's* H*W (the
example's quirk). ``size_independent`` uses means and Gram matrices divided by ``C*h*w``, so that a
weight means the same at any picture size. Gram matrices and losses are always float32, whatever
precision the network ran in: bfloat16 sums of this size lose enough to mislead L-BFGS.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["content_loss", "gram", "style_loss", "total_variation", "tutorial_style_divisor"]


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when it already is (for gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _Gram(torch.autograd.Function):
    """``m.T @ m`` for positions x channels ``m``, with a one-product backward.

    Autograd's generic matmul backward computes two products, one per operand; the Gram matrix
    is symmetric in its operands, so one suffices. Those products are the costliest float32 work
    of an evaluation after the network itself.
    """

    @staticmethod
    def forward(ctx: Any, m: Tensor) -> Tensor:
        ctx.save_for_backward(m)
        return m.T @ m

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (m,) = ctx.saved_tensors
        return m @ (grad + grad.T)


def gram(features: Tensor, *, normalize: bool) -> Tensor:
    """(C, C) Gram matrix F F^T (float32 at least) of (1, C, h, w) ``features``, F being
    channels x positions; divided by ``C*h*w`` when ``normalize``."""
    channels = features.shape[1]
    # Positions x channels is a free view of channels-last features (and a copy otherwise).
    m = _wide(features[0]).permute(1, 2, 0).reshape(-1, channels)
    g = _Gram.apply(m)
    return g / m.numel() if normalize else g


def content_loss(features: Tensor, target: Tensor, *, mean: bool) -> Tensor:
    """Squared error between ``features`` and ``target``: summed (tutorial) or averaged."""
    squared = (_wide(features) - target).square()
    return squared.mean() if mean else squared.sum()


def tutorial_style_divisor(height: int, width: int) -> float:
    """The Keras example's ``4 * channels**2 * size**2``: channels=3, size=H*W of the image."""
    return 4.0 * 3**2 * float(height * width) ** 2


def style_loss(g: Tensor, target: Tensor, *, divisor: float = 1.0) -> Tensor:
    """Sum of squared differences of two Gram matrices, divided by ``divisor``."""
    return (g - target).square().sum() / divisor


def total_variation(pixels: Tensor, *, power: float, mean: bool) -> Tensor:
    """``sum((a + b) ** power)`` (or its mean) over the picture cropped by one row and column,
    ``a``/``b`` the squared differences to the pixel below/right (the Keras example's form)."""
    x = _wide(pixels)
    corner = x[..., :-1, :-1]
    base = (corner - x[..., 1:, :-1]).square() + (corner - x[..., :-1, 1:]).square()
    if power < 1:
        # t**p has an infinite slope at t=0 for p < 1; flat patches would give NaN gradients.
        base = base.clamp_min(1e-8)
    terms = base.pow(power)
    return terms.mean() if mean else terms.sum()
