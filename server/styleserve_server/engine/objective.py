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

Every term is computed from sums over positions (``tiles.Sums``): a picture bigger than
``tile_pixels`` is evaluated tile by tile (``engine.tiles``) to the same value and gradient,
and so are the content's features and Gram matrices and the style pictures' Gram matrices that
the targets come from.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from styleserve.options import StyleOptions
from torch import Tensor

from styleserve_server.engine.box import Box
from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.losses import (
    gram_divisor,
    gram_sum,
    squared_error,
    style_loss,
    tutorial_style_divisor,
    tv_terms,
)
from styleserve_server.engine.regions import footprints
from styleserve_server.engine.tiles import Sums, Tile, accumulate, evaluate, forward, plan_tiles

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


def _nothing() -> None:
    pass


def _grams(
    net: FeatureNet,
    picture: Tensor,
    layers: Sequence[str],
    normalize: bool,
    tile_pixels: int | None,
    poll: Callable[[], None],
) -> dict[str, Tensor]:
    """The Gram matrices at ``layers`` of ``picture``, added up over its tiles."""
    height, width = picture.shape[-2:]
    plan = plan_tiles(height, width, tile_pixels, net.arch, layers)
    reach = footprints(net.arch)
    sums: Sums = {}
    for tile, features in forward(net, picture, layers, plan, poll):
        accumulate(
            sums,
            {k: gram_sum(tile.interior_of(f, reach[k][0])) for k, f in features.items()},
        )
    return {
        k: sums[k]
        / gram_divisor(
            sums[k].shape[0], _cells(height, width, reach[k][0]), None, normalize=normalize
        )
        for k in layers
    }


def _cells(height: int, width: int, stride: int) -> int:
    """Positions of a layer of ``stride`` on a ``height`` x ``width`` picture."""
    return (height // stride) * (width // stride)


def style_targets(
    net: FeatureNet,
    layers: Sequence[str],
    normalization: str,
    styles: Sequence[Tensor],
    blend: Sequence[float],
    before_each: Callable[[], None] = _nothing,
    tile_pixels: int | None = None,
) -> dict[str, Tensor]:
    """The Gram matrices at ``layers`` of the (1, 3, H, W) 0-255 RGB ``styles``, blended by
    ``blend`` (empty: equal shares): what a stage's style loss compares against. They depend
    on the style pictures and these arguments alone, so that they can be computed once for
    many jobs (``engine.style``). ``before_each`` runs before each picture's (with
    ``tile_pixels``, each tile's) forward pass, and may raise to stop them."""
    if not styles:
        raise ValueError("style targets need at least one style picture")
    normalize = normalization != "tutorial"
    targets: dict[str, Tensor] = {}
    unique = tuple(dict.fromkeys(layers))
    for share, style in zip(_shares(blend, len(styles)), styles, strict=True):
        for layer, g in _grams(net, style, unique, normalize, tile_pixels, before_each).items():
            weighted = share * g
            targets[layer] = weighted if layer not in targets else targets[layer] + weighted
    return targets


# A gap below this share of the style's own Gram energy counts as this share: a style picture
# equal to the content has no gap, and its term then holds the picture where it starts.
_LEAST_GAP = 1e-6


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
    """A part's guide at one layer's size: the squared guide per position (h, w), and its
    sum."""

    weights: Tensor
    area: float


@dataclass(frozen=True)
class _Part:
    """A style part as the objective evaluates it: per style layer what its Gram matrix's
    sum is divided by, its target and its weight (its guides are the objective's)."""

    divisors: dict[str, float]
    targets: dict[str, Tensor]
    weights: dict[str, float]


def _layer_guide(guide: Tensor, shape: tuple[int, int], device: torch.device) -> _Guide:
    """A layer's ``guide``, which must have the layer's ``shape`` (h, w), as the sums take
    it."""
    if tuple(guide.shape[-2:]) != shape:
        raise ValueError(f"a guide of {tuple(guide.shape)} does not fit a layer of {shape}")
    weights = guide.to(device, torch.float32).square()[0, 0]
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
        tile_pixels: int | None = None,
        poll: Callable[[], None] = _nothing,
    ) -> None:
        """``targets``: the blended style Gram matrices computed before (``style_targets``,
        e.g. kept by a registered style), instead of ``styles`` and ``blend``; ``parts``: the
        regions each style paints, instead of all three. Pictures (the content, the styles and
        those evaluated) of more than ``tile_pixels`` pixels are computed in tiles (None:
        never); ``poll`` is called before each tile's pass and may raise to stop."""
        self._net = net
        self._poll = poll
        self._tutorial = weights.normalization == "tutorial"
        self._layers = tuple(dict.fromkeys((*weights.content, *weights.style)))
        height, width = content.shape[-2:]
        self._style_divisor = tutorial_style_divisor(height, width) if self._tutorial else 1.0
        self._plan = plan_tiles(height, width, tile_pixels, net.arch, self._layers)
        reach = footprints(net.arch)
        self._strides = {k: reach[k][0] for k in self._layers}
        self._shapes = {k: (height // s, width // s) for k, s in self._strides.items()}
        self._tv_count = content.shape[1] * (height - 1) * (width - 1)
        self._tv_power = weights.tv_power
        relative = weights.normalization == "relative"
        own_grams = relative or weights.strength < 1.0
        self._guides: list[dict[str, _Guide] | None] = (
            [
                {k: _layer_guide(p.guides[k], self._shapes[k], net.device) for k in weights.style}
                for p in parts
            ]
            if parts
            else [None]
        )
        self._content_layers = tuple(weights.content)
        self._style_layers = tuple(weights.style)
        self._content: dict[str, Tensor] = {}
        measured = self._measure(content, self._layers if own_grams else tuple(weights.content))
        if not parts:
            styled = (
                style_targets(
                    net, self._style_layers, weights.normalization, styles, blend, poll, tile_pixels
                )
                if targets is None
                else targets
            )
            self._parts = [self._part(styled, 0, 1.0, measured, weights)]
        else:
            self._parts = [
                self._part(p.targets, i, p.share, measured, weights) for i, p in enumerate(parts)
            ]
        if relative:
            tiny = torch.finfo(torch.float32).tiny
            # Each term divided by what it measures of the content: the content features' own
            # energy (their mean square), and the content's own total variation.
            weights = dataclasses.replace(
                weights,
                content={
                    k: w / max(float(measured["content", k]) / self._content[k].numel(), tiny)
                    for k, w in weights.content.items()
                },
                tv=weights.tv / max(float(measured["tv"]) / self._tv_count, _LEAST_ROUGHNESS),
            )
        self._weights = weights

    def _measure(self, content: Tensor, layers: Sequence[str]) -> Sums:
        """Keeps the content's features at the content layers (the content term's targets)
        and returns its sums at ``layers`` against no target: the content term's sums are the
        features' energy, the style layers' the content's own Gram matrices."""
        total: Sums = {}
        for tile, features in forward(self._net, content, layers, self._plan, self._poll):
            for k in self._content_layers:
                f, stride = features[k], self._strides[k]
                if tile.whole:
                    self._content[k] = f
                    continue
                if k not in self._content:
                    self._content[k] = f.new_empty((1, f.shape[1], *self._shapes[k]))
                tile.of_whole(self._content[k], stride).copy_(tile.interior_of(f, stride))
            accumulate(total, self._sums(tile, tile.crop(content), features, None))
        return total

    def _part(
        self,
        styled: Mapping[str, Tensor],
        index: int,
        share: float,
        measured: Sums,
        weights: Weights,
    ) -> _Part:
        """The ``index``-th part, painted with the style whose Gram matrices are ``styled``,
        its weights ``share`` of ``weights``' style weights: the strength and the relative
        normalisation measured against the content's own Gram matrices there (in the
        content's sums, ``measured``)."""
        guides = self._guides[index]
        divisors = {
            k: gram_divisor(
                styled[k].shape[0],
                self._shapes[k][0] * self._shapes[k][1],
                None if guides is None else guides[k].area,
                normalize=not self._tutorial,
            )
            for k in self._style_layers
        }
        own = {
            k: measured["style", index, k] / divisors[k]
            for k in self._style_layers
            if ("style", index, k) in measured
        }
        aimed = {k: styled[k] for k in self._style_layers}
        if weights.strength < 1.0:
            s = weights.strength
            aimed = {k: s * g + (1.0 - s) * own[k] for k, g in aimed.items()}
        layer_weights = {k: w * share for k, w in weights.style.items()}
        if weights.normalization == "relative":
            layer_weights = {k: w / _gap(own[k], styled[k]) for k, w in layer_weights.items()}
        return _Part(divisors, aimed, layer_weights)

    def _sums(
        self,
        tile: Tile,
        window: Tensor,
        features: Mapping[str, Tensor],
        targets: Mapping[str, Tensor] | None,
    ) -> Sums:
        """The sums over ``tile``'s interior of its ``window`` of the picture, whose
        ``features`` the network gave: the content layers' squared errors to ``targets``
        (None: to zero), each part's Gram matrices at the style layers there are features of,
        and the total variation."""
        sums: Sums = {}
        for k in self._content_layers:
            stride = self._strides[k]
            target = 0.0 if targets is None else tile.of_whole(targets[k], stride)
            sums["content", k] = squared_error(tile.interior_of(features[k], stride), target)
        for i, guides in enumerate(self._guides):
            for k in self._style_layers:
                if k in features:
                    stride = self._strides[k]
                    cells = None if guides is None else tile.of_whole(guides[k].weights, stride)
                    f = tile.interior_of(features[k], stride)
                    sums["style", i, k] = gram_sum(f, None if cells is None else cells.flatten())
        rows, columns = tile.local(1)
        sums["tv"] = tv_terms(window, power=self._tv_power)[..., rows, columns].sum()
        return sums

    def _tile_sums(self, tile: Tile, window: Tensor) -> Sums:
        return self._sums(tile, window, self._net(window, self._layers), self._content)

    def _terms(self, sums: Sums) -> Tensor:
        """The weighted (content, style, tv) terms of a picture whose sums are ``sums``."""
        mean = not self._tutorial
        zero = sums["tv"].new_zeros(())
        content = sum(
            (
                w * sums["content", k] / (self._content[k].numel() if mean else 1)
                for k, w in self._weights.content.items()
            ),
            zero,
        )
        style = sum(
            (
                w
                * style_loss(
                    sums["style", i, k] / part.divisors[k],
                    part.targets[k],
                    divisor=self._style_divisor,
                )
                for i, part in enumerate(self._parts)
                for k, w in part.weights.items()
            ),
            zero,
        )
        tv = self._weights.tv * sums["tv"] / (self._tv_count if mean else 1)
        return torch.stack((content, style, tv))

    def __call__(self, pixels: Tensor, box: Box | None = None) -> tuple[Tensor, Tensor]:
        """(total, terms): the scalar loss of ``pixels`` (clamped into ``box``, the gradient
        passed straight through, a window at a time) and its weighted (content, style, tv)."""
        window = Tile.crop if box is None else functools.partial(_clamped, box)
        terms = evaluate(pixels, self._plan, self._tile_sums, self._terms, self._poll, window)
        return terms.sum(), terms


def _clamped(box: Box, tile: Tile, pixels: Tensor) -> Tensor:
    """``tile``'s window of ``pixels``, clamped into ``box`` (``Box.straight``)."""
    return box.crop(tile.crop).straight(tile.crop(pixels))
