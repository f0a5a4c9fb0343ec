"""The objective of one coarse-to-fine stage: targets computed once, then loss of any picture.

Targets (content features, blended style Gram matrices) are computed without autograd; the
per-evaluation work is one forward and backward pass of the network up to its deepest layer.
The style targets do not depend on the content, so ``style_targets`` is apart: a registered
style computes them once and hands them to every job that uses it. With regions, each style
picture paints its own ``StylePart`` of the picture instead of a blend painting all of it: its
Gram matrices are guided by the part's guide (``losses.guided_gram``) and its terms weighted by
the part's share of the area, so that one part covering the whole picture is exactly the
plain objective; everything below applies to each part in its own region.

The style strength moves each layer's target from the content's own Gram matrix (0) to the
styles' (1), as the instant tier's strength moves its style vector. With the ``relative``
normalisation every term is divided by what it measures of the content, so that a weight means
the same on every picture: the content term by the content features' own energy, each style
layer's term by the content's squared distance to the style there (the gap the layer has to
close), and the total variation by the content's own. Dividing by the gap rather than by the
style's own Gram energy is what evens the styles out: on golden_gate at 256 px with style
weight 1, the deep layer's share of the gap closed spread over The Scream, The Starry Night
and a van Doesburg by 0.63 divided by the energy, by 0.38 divided by the gap, and with the
default weights by 0.08 (benchmarks/quality.py measures it on its grid).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from styleserve.options import StyleOptions
from torch import Tensor

from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.losses import (
    content_loss,
    gram,
    guided_gram,
    style_loss,
    total_variation,
    tutorial_style_divisor,
)

__all__ = ["Objective", "StylePart", "Weights", "style_targets"]


@dataclass(frozen=True)
class Weights:
    """Each loss term's weight per layer (the options' weights times the layer's share)."""

    content: dict[str, float]
    style: dict[str, float]
    tv: float
    tv_power: float
    # "tutorial", "size_independent" or "relative" (see ``losses`` and this module).
    normalization: str
    # How far the style targets move from the content's own Gram matrices towards the styles'.
    strength: float = 1.0

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
            strength=o.style_strength,
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


# A gap below this share of the style's own Gram energy counts as this share: a style picture
# equal to the content has no gap, and its term then holds the picture where it starts.
_LEAST_GAP = 1e-6


def _energy(features: Tensor) -> float:
    """The mean square of ``features``: what the (mean) content term measures of them."""
    return max(float(features.square().mean()), torch.finfo(torch.float32).tiny)


def _gap(own: Tensor, style: Tensor) -> float:
    """The squared distance between the content's ``own`` Gram matrix and the ``style``'s."""
    energy = float(style.square().sum())
    return max(
        float((own - style).square().sum()), _LEAST_GAP * energy, torch.finfo(torch.float32).tiny
    )


# The total variation of a picture whose neighbouring pixels differ by about 6 levels per
# channel: the least the TV term is divided by, so that a flat content (no variation of its
# own) does not make any texture prohibitive.
_LEAST_ROUGHNESS = 100.0


def _roughness(content: Tensor, power: float) -> float:
    """The (mean) total variation of the content: what the relative TV term is divided by."""
    with torch.no_grad():
        return max(float(total_variation(content, power=power, mean=True)), _LEAST_ROUGHNESS)


@dataclass(frozen=True)
class StylePart:
    """The region one style paints (Gatys et al. 2017): its style's Gram matrices and its
    guides by layer (each (1, 1, h, w) in [0, 1] at the layer's size: how much each position
    belongs to the region), and its share of the style weight."""

    targets: Mapping[str, Tensor]
    guides: Mapping[str, Tensor]
    share: float


@dataclass(frozen=True)
class _Guide:
    """A part's guide at one layer's size: the squared guide per position, and its sum."""

    weights: Tensor
    area: float


@dataclass(frozen=True)
class _Part:
    """A style part as the objective evaluates it: per style layer its guide (None: the
    whole picture), target and weight."""

    guides: dict[str, _Guide] | None
    targets: dict[str, Tensor]
    weights: dict[str, float]


def _layer_guide(guide: Tensor, features: Tensor) -> _Guide:
    """A layer's ``guide``, which has the size of its ``features``, as ``guided_gram`` takes
    it."""
    if guide.shape[-2:] != features.shape[-2:]:
        raise ValueError(f"a guide of {guide.shape} does not fit features of {features.shape}")
    weights = guide.to(features.device, torch.float32).square().flatten()
    return _Guide(weights, float(weights.sum()))


class Objective:
    """Loss of a (1, 3, H, W) 0-255 RGB picture against one content and a blend of styles
    (or styles that each paint a part)."""

    def __init__(
        self,
        net: FeatureNet,
        weights: Weights,
        content: Tensor,
        styles: Sequence[Tensor] = (),
        blend: Sequence[float] = (),
        *,
        targets: Mapping[str, Tensor] | None = None,
        parts: Sequence[StylePart] = (),
    ) -> None:
        """``targets``: the blended style Gram matrices computed before (``style_targets``,
        e.g. kept by a registered style), instead of ``styles`` and ``blend``; ``parts``: the
        regions each style paints, instead of all three."""
        self._net = net
        self._tutorial = weights.normalization == "tutorial"
        self._layers = tuple(dict.fromkeys((*weights.content, *weights.style)))
        height, width = content.shape[-2:]
        self._style_divisor = tutorial_style_divisor(height, width) if self._tutorial else 1.0
        relative = weights.normalization == "relative"
        own_grams = relative or weights.strength < 1.0
        with torch.no_grad():
            deep = own_grams or bool(parts)
            features = net(content, self._layers if deep else tuple(weights.content))
            self._content = {k: features[k].to(torch.float32) for k in weights.content}
            if not parts:
                styled = (
                    style_targets(net, tuple(weights.style), weights.normalization, styles, blend)
                    if targets is None
                    else targets
                )
                self._parts = [self._part(styled, None, 1.0, features, weights)]
            else:
                self._parts = [
                    self._part(p.targets, p.guides, p.share, features, weights) for p in parts
                ]
        if relative:
            weights = dataclasses.replace(
                weights,
                content={k: w / _energy(self._content[k]) for k, w in weights.content.items()},
                tv=weights.tv / _roughness(content, weights.tv_power),
            )
        self._weights = weights

    def _part(
        self,
        styled: Mapping[str, Tensor],
        guides: Mapping[str, Tensor] | None,
        share: float,
        features: Mapping[str, Tensor],
        weights: Weights,
    ) -> _Part:
        """A part painted with the style whose Gram matrices are ``styled`` where ``guides``
        say (None: everywhere), its weights ``share`` of ``weights``' style weights: the
        strength and the relative normalisation measured against the content's own Gram
        matrices there (``features``: the content's)."""
        guided = (
            None if guides is None else {k: _layer_guide(guides[k], features[k]) for k in styled}
        )
        own = (
            {k: self._gram(features[k], None if guided is None else guided[k]) for k in styled}
            if weights.normalization == "relative" or weights.strength < 1.0
            else {}
        )
        aimed = dict(styled)
        if weights.strength < 1.0:
            s = weights.strength
            aimed = {k: s * g + (1.0 - s) * own[k] for k, g in styled.items()}
        layer_weights = {k: w * share for k, w in weights.style.items()}
        if weights.normalization == "relative":
            layer_weights = {k: w / _gap(own[k], styled[k]) for k, w in layer_weights.items()}
        return _Part(guided, aimed, layer_weights)

    def _gram(self, features: Tensor, guide: _Guide | None = None) -> Tensor:
        if guide is None:
            return gram(features, normalize=not self._tutorial)
        return guided_gram(features, guide.weights, guide.area, normalize=not self._tutorial)

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
                w
                * style_loss(
                    self._gram(features[k], None if part.guides is None else part.guides[k]),
                    part.targets[k],
                    divisor=self._style_divisor,
                )
                for part in self._parts
                for k, w in part.weights.items()
            ),
            zero,
        )
        tv = self._weights.tv * total_variation(pixels, power=self._weights.tv_power, mean=mean)
        terms = torch.stack((content, style, tv))
        return terms.sum(), terms
