"""The three terms of the objective, as pure functions of tensors.

Two normalisations exist. ``tutorial`` reproduces the Keras example to the letter: sums of
squares, and style layers divided by ``4 * 3**2 * (H*W)**2`` with the *image's* H*W (the
example's quirk). ``size_independent`` uses means and Gram matrices divided by ``C*h*w``, so that a
weight means the same at any picture size. Gram matrices and losses are always float32, whatever
precision the network ran in: bfloat16 sums of this size lose enough to mislead L-BFGS.

``guided_gram`` is a region's Gram matrix (Gatys et al. 2017, "Controlling perceptual factors
in neural style transfer"): each position weighted by the square of the region's guide there,
and divided by the guide's own weight rather than the picture's size, so that a region's Gram
matrix compares with a whole style picture's whatever the region's area.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "content_loss",
    "gram",
    "gram_divisor",
    "gram_sum",
    "guided_gram",
    "memory_layout",
    "squared_error",
    "style_loss",
    "total_variation",
    "tv_terms",
    "tutorial_style_divisor",
]


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 when it already is (for gradient checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _Gram(torch.autograd.Function):
    """``F F^T`` for (1, C, h, w) ``features``, F being their channels x positions view.

    The forward product runs in float32 at least (see the module docstring). The backward
    product runs in the features' own precision and writes the gradient straight into the
    features' memory layout: a float32 gradient would need a cast, and a gradient in another
    layout than the convolution's (channels-last on CPUs) makes autograd's accumulation and the
    ReLU's backward take slow strided paths, which together cost more than the network's
    backward convolutions. Being symmetric in its operands, the product also needs only one
    backward product where autograd's generic matmul would compute two.
    """

    @staticmethod
    def forward(ctx: Any, features: Tensor) -> Tensor:
        ctx.save_for_backward(features)
        wide = _wide(_flat(features))
        return wide @ wide.T

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (features,) = ctx.saved_tensors
        result = torch.empty_like(features, memory_format=memory_layout(features))
        torch.mm((grad + grad.T).to(features.dtype), _flat(features), out=_flat(result))
        return result


class _GuidedGram(torch.autograd.Function):
    """``F diag(w) F^T`` for (1, C, h, w) ``features`` and (h*w,) float32 ``weights``, as
    ``_Gram`` computes ``F F^T`` (float32 product, the gradient in the features' precision and
    layout). Only the features and the weights are kept for the backward pass, never the
    weighted features: a region costs its guide's memory, not another copy of the layer.
    Weights of exactly 1 give exactly ``_Gram``'s result."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(features, weights)
        wide = _wide(_flat(features))
        return wide @ (wide * weights).T

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        features, weights = ctx.saved_tensors
        flat = _flat(features)
        result = torch.empty_like(features, memory_format=memory_layout(features))
        torch.mm((grad + grad.T).to(flat.dtype), flat * weights.to(flat.dtype), out=_flat(result))
        return result, None


def _flat(features: Tensor) -> Tensor:
    """The (C, h*w) view of (1, C, h, w) ``features``: free in NCHW and channels-last alike."""
    return features.flatten(2)[0]


def memory_layout(features: Tensor) -> torch.memory_format:
    """Channels-last where ``features`` are; NCHW otherwise, so that ``_flat`` is a view."""
    channels_last = features.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def gram_sum(features: Tensor, weights: Tensor | None = None) -> Tensor:
    """(C, C) ``F diag(weights) F^T`` (float32 at least) of (1, C, h, w) ``features``, F being
    channels x positions and ``weights`` (h*w,) float32 (None: all 1): a Gram matrix before
    its division, which sums over positions, so that pictures evaluated in tiles add theirs
    up (``engine.tiles``)."""
    if weights is None:
        return _Gram.apply(features)
    return _GuidedGram.apply(features, weights)


def gram_divisor(channels: int, positions: int, area: float | None, *, normalize: bool) -> float:
    """What ``gram_sum`` over ``positions`` cells of ``channels`` channels is divided by:
    ``gram``'s ``C*h*w`` (1 unnormalised), or with a guide whose squares sum to ``area``,
    ``guided_gram``'s ``C*area`` (``area/(h*w)`` unnormalised)."""
    if area is None:
        return float(channels * positions) if normalize else 1.0
    return channels * area if normalize else area / positions


def gram(features: Tensor, *, normalize: bool) -> Tensor:
    """(C, C) Gram matrix F F^T (float32 at least) of (1, C, h, w) ``features``, F being
    channels x positions; divided by ``C*h*w`` when ``normalize``."""
    c, h, w = features.shape[1:]
    return gram_sum(features) / gram_divisor(c, h * w, None, normalize=normalize)


def guided_gram(features: Tensor, weights: Tensor, area: float, *, normalize: bool) -> Tensor:
    """(C, C) Gram matrix ``F diag(weights) F^T`` of (1, C, h, w) ``features`` whose
    positions are weighted by ``weights`` (h*w,), the squares of a region's guide, whose sum is
    ``area``: divided by ``C*area`` when ``normalize`` (``gram``'s mean over the region's
    positions), else scaled by ``h*w/area`` (``gram``'s sum, as if the region filled the
    picture). Weights of 1 everywhere give exactly ``gram``."""
    c, h, w = features.shape[1:]
    return gram_sum(features, weights) / gram_divisor(c, h * w, area, normalize=normalize)


def squared_error(features: Tensor, target: Tensor | float) -> Tensor:
    """Squared error between ``features`` and ``target``, summed (float32 at least)."""
    return (_wide(features) - target).square().sum()


def content_loss(features: Tensor, target: Tensor, *, mean: bool) -> Tensor:
    """Squared error between ``features`` and ``target``: summed (tutorial) or averaged."""
    total = squared_error(features, target)
    return total / features.numel() if mean else total


def tutorial_style_divisor(height: int, width: int) -> float:
    """The Keras example's ``4 * channels**2 * size**2``: channels=3, size=H*W of the image."""
    return 4.0 * 3**2 * float(height * width) ** 2


def style_loss(g: Tensor, target: Tensor, *, divisor: float = 1.0) -> Tensor:
    """Sum of squared differences of two Gram matrices, divided by ``divisor``."""
    return (g - target).square().sum() / divisor


def tv_terms(pixels: Tensor, *, power: float) -> Tensor:
    """``(a + b) ** power`` per channel and pixel of the picture cropped by one row and
    column, ``a``/``b`` the squared differences to the pixel below/right (the Keras example's
    form): (1, C, H-1, W-1), float32 at least."""
    x = _wide(pixels)
    corner = x[..., :-1, :-1]
    base = (corner - x[..., 1:, :-1]).square() + (corner - x[..., :-1, 1:]).square()
    if power < 1:
        # t**p has an infinite slope at t=0 for p < 1; flat patches would give NaN gradients.
        base = base.clamp_min(1e-8)
    return base.pow(power)


def total_variation(pixels: Tensor, *, power: float, mean: bool) -> Tensor:
    """The sum (or the mean) of ``tv_terms``."""
    terms = tv_terms(pixels, power=power)
    return terms.mean() if mean else terms.sum()
