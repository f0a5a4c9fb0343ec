"""Exact tiled evaluation: the objective of a picture of any size in the memory of one tile.

Why it exists: a forward and backward pass of VGG holds every layer's activations of the whole
picture at once, 1.16 GB per megapixel in bfloat16 on VGG16's default layers (1.95 in float32),
so that the memory of a job grows with its pixels until it does not fit. The field's tilings
(independent tiles blended afterwards, or tiles each compared with the whole style and the grid
rolled each iteration) each optimise another objective than the untiled one; this module
computes the untiled one, its value and its gradient, up to float rounding.

How: every term of the objective is a function of sums over positions (a Gram matrix sums its
layer's positions, the content and total-variation terms sum squared errors), and a layer's
cell depends only on the pixels within its receptive field. So the picture is cut into tiles
whose *interiors* partition every layer's feature map (``plan_tiles``): each tile has a halo as
wide as the deepest layer's receptive field reaches past a cell (58 pixels for VGG16's
block5_conv1, ``regions.footprints``), its origin on a multiple of the deepest layer's stride
(16) so that its pooling windows are the whole picture's, and the tiles at the picture's edges
reach the real edge, so that the zero padding there is the real one. Every interior cell of a
tile is then the whole picture's cell. An evaluation (``evaluate``) takes two passes:

1. without autograd, each tile's sums over its interior (``Sums``) add up to the whole
   picture's; the loss follows from them, and so does its derivative by each sum, which is
   small (a C x C matrix per Gram matrix, a scalar per squared error);
2. per tile, a forward and backward pass of the surrogate <dL/dsums, sums of the tile>, whose
   gradient is the tile's share of the loss's gradient; the shares add up to the whole
   picture's gradient (halos overlap: each pixel gets the share of every tile that reads it).
   The last tile of pass 1 keeps its graph, so that pass 2 starts with its backward pass: on
   a 2-core AVX2 EPYC (float32) a 2 MP picture's evaluation in 3 tiles took 8% less time,
   with the same value, and the same gradient up to the order its shares are added in (bit
   for bit in 3 tiles, 6e-8 apart relative in 8).

Cost: a no-grad forward pass of all tiles but one more than untiled, plus the halos. The
backward pass computes no weight gradients, so on a 2-core AMD EPYC in bfloat16 it costs about
what the forward pass does, and the extra forward adds about half an evaluation; the halos add
21-24% more pixels with tiles of 2**20 pixels (1024 x 1024, the server's default
``tile_pixels``). A tiled evaluation took 1.6-1.9 times the untiled one per pixel at 1-2 MP
(before the last tile kept its graph). A
picture within one tile is evaluated as before, in one pass. ``memory.predicted_peak_bytes``
says what a job's peak memory is with a given ``tile_pixels``, for admission.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from styleserve.options import PRESETS
from torch import Tensor

from styleserve_server.engine.features import FeatureNet
from styleserve_server.engine.losses import memory_layout
from styleserve_server.engine.regions import footprints

__all__ = [
    "Sums",
    "Tile",
    "TilePlan",
    "accumulate",
    "evaluate",
    "forward",
    "plan_tiles",
    "tile_borders",
]

Sums = dict[Hashable, Tensor]
"""A picture's (or a tile's) sums by name: whatever an objective adds up over positions."""


@dataclass(frozen=True)
class Tile:
    """A window of the picture (top, left, bottom, right; pixels) and the part of it the tile
    answers for, its ``interior``: every layer's cells whose pixels lie in it. Interiors are
    aligned to the deepest layer's stride (or end at the picture's edge), so that a layer's
    cells are in exactly one interior."""

    window: tuple[int, int, int, int]
    interior: tuple[int, int, int, int]
    whole: bool

    def crop(self, picture: Tensor) -> Tensor:
        """The tile's window of ``picture`` (a view)."""
        top, left, bottom, right = self.window
        return picture[..., top:bottom, left:right]

    def cells(self, stride: int) -> tuple[slice, slice]:
        """The interior's cells (rows, columns) in the whole picture's map of a layer of
        ``stride`` (the maps floor each pool, so the picture's last cells end with it)."""
        top, left, bottom, right = self.interior
        return slice(top // stride, bottom // stride), slice(left // stride, right // stride)

    def local(self, stride: int) -> tuple[slice, slice]:
        """The interior's cells in the tile's own map of a layer of ``stride``."""
        rows, columns = self.cells(stride)
        top, left = self.window[0] // stride, self.window[1] // stride
        return (
            slice(rows.start - top, rows.stop - top),
            slice(columns.start - left, columns.stop - left),
        )

    def interior_of(self, features: Tensor, stride: int) -> Tensor:
        """The interior's cells of the tile's ``features`` at a layer of ``stride``:
        differentiable, in the features' memory layout (a gradient in another layout than
        the network's makes its backward pass take slow paths)."""
        if self.whole:
            return features
        rows, columns = self.local(stride)
        result: Tensor = _Interior.apply(features, rows, columns)
        return result

    def of_whole(self, source: Tensor, stride: int) -> Tensor:
        """The interior's cells of a whole picture's map ``source`` (..., H//stride,
        W//stride) at a layer of ``stride``: a view."""
        rows, columns = self.cells(stride)
        return source[..., rows, columns]


class _Interior(torch.autograd.Function):
    """``features[..., rows, columns]``, copied in the features' layout; the backward pass
    writes the gradient into zeros of the features' shape and layout."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, rows: slice, columns: slice) -> Tensor:
        ctx.shape, ctx.layout, ctx.rows, ctx.columns = (
            features.shape,
            memory_layout(features),
            rows,
            columns,
        )
        return features[..., rows, columns].contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        result = torch.empty(
            ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout
        ).zero_()
        result[..., ctx.rows, ctx.columns] = grad
        return result, None, None


@dataclass(frozen=True)
class TilePlan:
    """A (height, width) picture's tiles; ``rows`` and ``columns`` are where interiors meet
    (the first pixel of each interior after the first), for measuring seams."""

    tiles: tuple[Tile, ...]
    rows: tuple[int, ...]
    columns: tuple[int, ...]


@dataclass(frozen=True)
class _Bands:
    """One axis of length ``length`` cut into bands: each band's interior (lo, hi) and window
    (lo, hi)."""

    interiors: tuple[tuple[int, int], ...]
    windows: tuple[tuple[int, int], ...]

    @property
    def longest(self) -> int:
        return max(hi - lo for lo, hi in self.windows)

    @property
    def spanned(self) -> int:
        return sum(hi - lo for lo, hi in self.windows)


def _bands(length: int, count: int, stride: int, halo: int) -> _Bands:
    """``length`` cut into ``count`` (at most ``length // stride``) interiors of about equal
    length, on multiples of ``stride``, each windowed by ``halo`` (its near side moved down to
    a multiple of ``stride``) but never past the axis' ends."""
    units = length // stride
    cuts = [
        0,
        *(stride * ((2 * k * units + count) // (2 * count)) for k in range(1, count)),
        length,
    ]
    interiors = tuple(itertools.pairwise(cuts))
    windows = tuple(
        (
            0 if lo == 0 else max(0, (lo - halo) // stride * stride),
            length if hi == length else min(length, hi + halo),
        )
        for lo, hi in interiors
    )
    return _Bands(interiors, windows)


def _reach(arch: str, layers: Sequence[str]) -> tuple[int, int]:
    """(stride, halo) of the deepest of ``layers``: how tiles must be aligned and padded."""
    reach = footprints(arch)
    return max(reach[k][0] for k in layers), max(reach[k][1] for k in layers)


def plan_tiles(
    height: int, width: int, tile_pixels: int | None, arch: str, layers: Sequence[str]
) -> TilePlan:
    """The tiles of a ``height`` x ``width`` picture for ``layers`` of an ``arch`` network:
    one (the whole picture) when ``tile_pixels`` is None or the picture has no more pixels;
    else the grid whose windows (halos included) have at most ``tile_pixels`` pixels each and
    together the fewest, which keeps the halos' extra work least. Raises ValueError when
    ``tile_pixels`` cannot hold one stride's interior and its halo."""
    whole = (0, 0, height, width)
    if tile_pixels is None or height * width <= tile_pixels:
        return TilePlan((Tile(whole, whole, True),), (), ())
    stride, halo = _reach(arch, layers)
    across = [_bands(height, n, stride, halo) for n in range(1, max(1, height // stride) + 1)]
    along = [_bands(width, n, stride, halo) for n in range(1, max(1, width // stride) + 1)]
    fitting = []
    for rows in across:
        # More columns than the fewest that fit only add halos.
        columns = next((c for c in along if rows.longest * c.longest <= tile_pixels), None)
        if columns is not None:
            count = len(rows.interiors) * len(columns.interiors)
            fitting.append((rows.spanned * columns.spanned, count, rows, columns))
    if not fitting:
        least = min(b.longest for b in across) * min(b.longest for b in along)
        raise ValueError(
            f"tile_pixels={tile_pixels} cannot hold a tile of a {width}x{height} picture: "
            f"give at least {least}"
        )
    _, _, rows, columns = min(fitting, key=lambda f: f[:2])
    tiles = tuple(
        Tile((r[0], c[0], r[1], c[1]), (ri[0], ci[0], ri[1], ci[1]), False)
        for r, ri in zip(rows.windows, rows.interiors, strict=True)
        for c, ci in zip(columns.windows, columns.interiors, strict=True)
    )
    return TilePlan(
        tiles,
        tuple(lo for lo, _ in rows.interiors[1:]),
        tuple(lo for lo, _ in columns.interiors[1:]),
    )


_DEFAULT_LAYERS = (*PRESETS["default"].content_layers, *PRESETS["default"].style_layers)


def tile_borders(
    size: tuple[int, int],
    tile_pixels: int | None,
    layers: Sequence[str] = _DEFAULT_LAYERS,
    arch: str = "vgg16",
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where the interiors of a (width, height) ``size`` picture's tiles meet, as a seam
    measure takes them: (columns, rows), each the first pixel of an interior after the first
    (none when the picture is one tile); by default for the default preset's layers."""
    width, height = size
    plan = plan_tiles(height, width, tile_pixels, arch, layers)
    return plan.columns, plan.rows


def forward(
    net: FeatureNet,
    picture: Tensor,
    layers: Sequence[str],
    plan: TilePlan,
    poll: Callable[[], None],
) -> Iterator[tuple[Tile, dict[str, Tensor]]]:
    """Each tile of ``plan`` and its features at ``layers`` (no autograd), ``poll`` called
    before each tile (it may raise to stop)."""
    for tile in plan.tiles:
        poll()
        with torch.no_grad():
            features = net(tile.crop(picture), layers)
        yield tile, features


def accumulate(total: Sums, sums: Sums) -> None:
    """Adds ``sums`` (a tile's) into ``total``."""
    for key, value in sums.items():
        total[key] = value if key not in total else total[key] + value


@dataclass(frozen=True)
class _Evaluation:
    plan: TilePlan
    sums: Callable[[Tile, Tensor], Sums]
    terms: Callable[[Sums], Tensor]
    poll: Callable[[], None]
    window: Callable[[Tile, Tensor], Tensor]


class _Tiled(torch.autograd.Function):
    """``terms`` of the whole picture's sums, accumulated over the tiles (pass 1), with the
    gradient computed tile by tile (pass 2): see the module's docstring."""

    @staticmethod
    def forward(ctx: Any, pixels: Tensor, evaluation: _Evaluation) -> Tensor:
        total: Sums = {}
        *first, last = evaluation.plan.tiles
        for tile in first:
            evaluation.poll()
            accumulate(total, evaluation.sums(tile, evaluation.window(tile, pixels)))
        # The last tile's pass keeps its graph when a gradient follows: pass 2 starts with
        # it, one forward pass of a tile fewer per evaluation, in the memory pass 2 holds.
        evaluation.poll()
        ctx.kept = _graph(evaluation, last, pixels) if ctx.needs_input_grad[0] else None
        if ctx.kept is None:
            accumulate(total, evaluation.sums(last, evaluation.window(last, pixels)))
        else:
            accumulate(total, {key: value.detach() for key, value in ctx.kept[1].items()})
        leaves = {key: value.detach().requires_grad_(True) for key, value in total.items()}
        with torch.enable_grad():
            terms = evaluation.terms(leaves)
        ctx.save_for_backward(pixels)
        ctx.evaluation, ctx.leaves, ctx.terms = evaluation, leaves, terms
        return terms.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_terms: Tensor) -> tuple[Tensor, None]:
        (pixels,) = ctx.saved_tensors
        evaluation: _Evaluation = ctx.evaluation
        keys = list(ctx.leaves)
        slopes = torch.autograd.grad(
            ctx.terms, [ctx.leaves[k] for k in keys], grad_terms, allow_unused=True
        )
        by_key = {k: s for k, s in zip(keys, slopes, strict=True) if s is not None}
        grad = torch.zeros_like(pixels)
        *first, last = evaluation.plan.tiles
        # Each graph is freed once its share is added: one tile's is held at a time.
        last.crop(grad).add_(_share(by_key, *ctx.kept))
        ctx.kept = None
        for tile in first:
            evaluation.poll()
            tile.crop(grad).add_(_share(by_key, *_graph(evaluation, tile, pixels)))
        return grad, None


def _graph(evaluation: _Evaluation, tile: Tile, pixels: Tensor) -> tuple[Tensor, Sums]:
    """``tile``'s window of ``pixels`` as a leaf, and its sums with their graph back to it."""
    with torch.enable_grad():
        window = evaluation.window(tile, pixels).detach().requires_grad_(True)
        return window, evaluation.sums(tile, window)


def _share(slopes: Sums, window: Tensor, sums: Sums) -> Tensor:
    """The gradient by ``window`` of the surrogate <``slopes``, ``sums``>: the tile's share of
    the loss's gradient."""
    with torch.enable_grad():
        surrogate = sum(((s * sums[k]).sum() for k, s in slopes.items()), window.new_zeros(()))
        (share,) = torch.autograd.grad(surrogate, window)
    return share


def evaluate(
    pixels: Tensor,
    plan: TilePlan,
    sums: Callable[[Tile, Tensor], Sums],
    terms: Callable[[Sums], Tensor],
    poll: Callable[[], None],
    window: Callable[[Tile, Tensor], Tensor] = Tile.crop,
) -> Tensor:
    """``terms`` of the sums of ``pixels`` (a tile's: ``sums(tile, window(tile, pixels))``,
    which must add up over ``plan``'s tiles to the whole picture's), differentiable by
    ``pixels``; ``poll`` is called before each tile's pass (it may raise to stop). ``window``
    cuts a tile's window out (differentiably): by default as it is, or clamped, so that a
    whole clamped picture is never held."""
    if len(plan.tiles) == 1:
        (tile,) = plan.tiles
        return terms(sums(tile, window(tile, pixels)))
    result: Tensor = _Tiled.apply(pixels, _Evaluation(plan, sums, terms, poll, window))
    return result
