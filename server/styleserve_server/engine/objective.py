"""The objective of one coarse-to-fine stage: targets computed once, then loss of any picture.

Targets (content features, blended style Gram matrices) are computed without autograd; the
per-evaluation work is one forward and backward pass of the network up to its deepest layer.
The style targets do not depend on the content, so ``style_targets`` is apart: a registered
style computes them once and hands them to every job that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from styleserve.options import StyleOptions
from torch import Tensor

from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.losses import (
    content_loss,
    gram,
    style_loss,
    total_variation,
    tutorial_style_divisor,
)

__all__ = ["Objective", "Weights", "style_targets"]


@dataclass(frozen=True)
class Weights:
    """Each loss term's weight per layer (the options' weights times the layer's share)."""

    content: dict[str, float]
    style: dict[str, float]
    tv: float
    tv_power: float
    # "tutorial" or "size_independent" (see ``losses``).
    normalization: str

    @classmethod
    def from_options(cls, o: StyleOptions) -> Weights:
        shares = _shares(o.style_layer_weights, len(o.style_layers))
        return cls(
            content={layer: o.content_weight / len(o.content_layers) for layer in o.content_layers},
            style={
                layer: o.style_weight * s for layer, s in zip(o.style_layers, shares, strict=True)
            },
            tv=o.tv_weight,
            tv_power=o.tv_power,
            normalization=o.loss_normalization,
        )


def _shares(weights: Sequence[float], count: int) -> list[float]:
    """``weights`` scaled to sum to one; equal shares when empty."""
    if not weights:
        return [1.0 / count] * count
    total = float(sum(weights))
    return [w / total for w in weights]


def style_targets(
    net: FeatureNet,
    layers: Sequence[str],
    normalization: str,
    styles: Sequence[Tensor],
    blend: Sequence[float],
    before_each: Callable[[], None] = lambda: None,
) -> dict[str, Tensor]:
    """The Gram matrices at ``layers`` of the (1, 3, H, W) 0-255 RGB ``styles``, blended by
    ``blend`` (empty: equal shares): what a stage's style loss compares against. They depend
    on the style pictures and these arguments alone, so that they can be computed once for
    many jobs (``engine.style``). ``before_each`` runs before each picture's forward pass (and
    may raise to stop them)."""
    if not styles:
        raise ValueError("style targets need at least one style picture")
    normalize = normalization != "tutorial"
    targets: dict[str, Tensor] = {}
    with torch.no_grad():
        for share, style in zip(_shares(blend, len(styles)), styles, strict=True):
            before_each()
            for layer, f in net(style, tuple(dict.fromkeys(layers))).items():
                weighted = share * gram(f, normalize=normalize)
                targets[layer] = weighted if layer not in targets else targets[layer] + weighted
    return targets


class Objective:
    """Loss of a (1, 3, H, W) 0-255 RGB picture against one content and a blend of styles."""

    def __init__(
        self,
        net: FeatureNet,
        weights: Weights,
        content: Tensor,
        styles: Sequence[Tensor] = (),
        blend: Sequence[float] = (),
        *,
        targets: Mapping[str, Tensor] | None = None,
    ) -> None:
        """``targets``: the blended style Gram matrices computed before (``style_targets``,
        e.g. kept by a registered style), instead of ``styles`` and ``blend``."""
        self._net = net
        self._weights = weights
        self._tutorial = weights.normalization == "tutorial"
        self._layers = tuple(dict.fromkeys((*weights.content, *weights.style)))
        height, width = content.shape[-2:]
        self._style_divisor = tutorial_style_divisor(height, width) if self._tutorial else 1.0
        with torch.no_grad():
            features = net(content, tuple(weights.content))
            self._content = {k: v.to(torch.float32) for k, v in features.items()}
        self._style = (
            style_targets(net, tuple(weights.style), weights.normalization, styles, blend)
            if targets is None
            else targets
        )

    def _gram(self, features: Tensor) -> Tensor:
        return gram(features, normalize=not self._tutorial)

    def __call__(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(total, terms): the scalar loss of ``pixels`` and its weighted (content, style, tv)."""
        features = self._net(pixels, self._layers)
        mean = not self._tutorial
        zero = pixels.new_zeros((), dtype=torch.float32)
        content = sum(
            (
                w * content_loss(features[k], self._content[k], mean=mean)
                for k, w in self._weights.content.items()
            ),
            zero,
        )
        style = sum(
            (
                w * style_loss(self._gram(features[k]), self._style[k], divisor=self._style_divisor)
                for k, w in self._weights.style.items()
            ),
            zero,
        )
        tv = self._weights.tv * total_variation(pixels, power=self._weights.tv_power, mean=mean)
        terms = torch.stack((content, style, tv))
        return terms.sum(), terms
