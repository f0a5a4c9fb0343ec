"""Regions: each style paints its own part of the picture, and a keep region stays the content.

A job with regions gets one boolean mask per style at the output's size; pixels in none keep
the content. Both tiers read the masks through this module, the ``region_border`` option
saying how far (output pixels) a style may reach past its region's edge:

- The optimisation's guides (``stage_guides``, Gatys et al. 2017's "inside" guides): per style
  layer, the layer's cells that lie wholly in the region, eroded until no cell's receptive
  field reaches more than the border past the region. A region's Gram matrices
  (``losses.guided_gram``) so read no feature that sees the other side, and its terms' gradient
  is exactly zero on every pixel beyond the border (style otherwise leaks across edges, the
  known pitfall of regions). VGG16's receptive fields reach 1, 4, 10, 26 and 58 pixels past a
  cell at block1_conv1 to block5_conv1, so at the default border of 8 only the three deepest
  layers are eroded, by 1, 3 and 4 cells. A guide never vanishes: where the region is thinner
  than a layer's receptive field, the erosion halves until a core remains, and where no cell
  lies wholly in it, each cell counts by the share of it the region covers; there the layer
  may reach farther.
- The instant tier (``blend``): each style's picture weighted by its mask feathered outward
  over the border, the weights normalised to sum to one.
- Both deliver the keep region as the content itself (``keep_content``): the content is blended
  into the styled pixels over the border outside the keep region (a ramp from 1 at its edge to
  0 at the border's width), never the other way.

Cost, stated: per stage and region, a min-pool to each layer's cells and a separable erosion by
at most 8 cells (VGG19's block5_conv4 at a border of 0), and once per job a feathering of the
output (separable filters of about border + 1 taps, once per region for the instant tier, once
for the keep region): well under one evaluation. The guides hold one float32 per cell of each
style layer per region: 4/3 of the stage's pixels on the default layers, 22 MB per region at
2048 x 2048. Each evaluation computes one Gram matrix per region and style layer where the
plain objective computes one per layer, and autograd keeps nothing more than the guides
(``losses.guided_gram``). On VGG16's default layers a Gram matrix and its gradient are about a
twentieth of the network's forward and backward multiply-adds, so each region past the first
should add about 5% to an evaluation; measured on the tiny network at 384 px on a CPU, where
the element-wise work weighs more, 4 regions took 1.35x and 8 regions 1.7x a plain evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from styleserve.options import VGG_LAYERS, OptionsError
from torch import Tensor
from torch.nn import functional as F

from styleserve_server.engine.imaging import to_image, to_tensor

__all__ = [
    "blend",
    "check_masks",
    "footprints",
    "keep_content",
    "keep_weight",
    "shares",
    "stage_guides",
]


def check_masks(masks: Sequence[np.ndarray], styles: int, size: tuple[int, int]) -> None:
    """``masks`` are one boolean mask per style picture (``styles``) at the output's ``size``
    (width, height), each with a pixel. Raises OptionsError naming ``regions``."""
    if len(masks) != styles:
        raise OptionsError(
            "regions", f"give one mask per style picture ({styles}), got {len(masks)}"
        )
    for mask in masks:
        if mask.dtype != np.bool_ or mask.shape != size[::-1] or not mask.any():
            raise OptionsError(
                "regions", f"each mask is a boolean {size[0]}x{size[1]} array with a pixel set"
            )


def _tensor(mask: np.ndarray, device: torch.device) -> Tensor:
    """A boolean (H, W) mask as a float32 (1, 1, H, W) tensor of 0 and 1."""
    return torch.from_numpy(mask.astype(np.float32))[None, None].to(device)


def _dilate(x: Tensor, radius: int) -> Tensor:
    """The maximum over a square of side 2 * ``radius`` + 1 (separable); positions outside
    the picture take no part."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))


def _erode(x: Tensor, radius: int) -> Tensor:
    """The minimum over the same square: outside the picture counts as inside the region, so
    that a region is eroded only along its edges with other regions."""
    return 1.0 - _dilate(1.0 - x, radius)


def _box(x: Tensor, radius: int) -> Tensor:
    """The mean over a square of side 2 * ``radius`` + 1, the edges repeated outward."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    x = F.avg_pool2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), (1, k), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), (k, 1), stride=1)


def _feather(x: Tensor, border: float) -> Tensor:
    """``x`` (in [0, 1]) kept where it is 1 and ramped down to 0 over ``border`` pixels
    outward: dilated by half the border, then averaged over a box of the same half width."""
    half = round(border / 2)
    return torch.maximum(_box(_dilate(x, half), half), x)


def shares(masks: Sequence[np.ndarray]) -> list[float]:
    """Each region's share of the picture's area: its share of the style weight, so that one
    mask of the whole picture weighs as the plain objective does."""
    return [float(np.count_nonzero(m)) / m.size for m in masks]


def footprints(arch: str) -> dict[str, tuple[int, int]]:
    """Each convolution layer of ``arch``: its stride in input pixels, and how far its
    receptive field reaches past the pixels of its cell (3x3 convolutions widen it by one cell
    each side, 2x2 pools by half a cell). The guides and the tiles (``engine.tiles``) both
    follow from it."""
    reach: dict[str, tuple[int, int]] = {}
    field, stride, block = 1, 1, "block1"
    for layer in VGG_LAYERS[arch]:
        if not layer.startswith(block + "_"):
            field, stride, block = field + stride, stride * 2, layer.split("_")[0]
        field += 2 * stride
        reach[layer] = (stride, (field - stride) // 2)
    return reach


def stage_guides(
    masks: Sequence[np.ndarray],
    size: tuple[int, int],
    border: float,
    arch: str,
    layers: Sequence[str],
    device: torch.device,
) -> list[dict[str, Tensor]]:
    """Each mask (boolean, at the output's size) as a guide per layer of ``layers`` of an
    ``arch`` network, for a stage of ``size`` (width, height): (1, 1, h, w) in [0, 1], the
    layer's cells that lie wholly in the region (the mask area-averaged to the stage, then
    the least of each cell), eroded until no cell's receptive field reaches more than
    ``border`` output pixels past the region. Where that erosion would leave nothing (a
    region thinner than the layer's receptive field), the erosion is halved until a core of
    the region remains, and where no cell lies wholly in the region (thinner than a cell),
    the guide is the share of each cell the region covers: a guide never vanishes."""
    width, height = size
    reach = footprints(arch)
    guides = []
    for mask in masks:
        stage = F.interpolate(_tensor(mask, device), size=(height, width), mode="area")
        beyond = border * width / mask.shape[1]
        by_layer = {}
        for layer in layers:
            stride, past = reach[layer]
            cells = _erode_cells(stage, stride)
            radius = math.ceil(max(0.0, past - beyond) / stride)
            guide = _erode(cells, radius)
            while radius > 0 and not bool(guide.any()):
                radius //= 2
                guide = _erode(cells, radius)
            if not bool(guide.any()):
                # Not one cell lies wholly in the region: the cells it touches, by how much.
                rows, columns = cells.shape[-2:]
                guide = F.adaptive_avg_pool2d(stage, (rows, columns))
            by_layer[layer] = guide
        guides.append(by_layer)
    return guides


def _erode_cells(x: Tensor, stride: int) -> Tensor:
    """The least of each ``stride`` x ``stride`` cell of ``x``: the cells of a layer of that
    stride (VGG's pools floor the sizes, as this does)."""
    if stride == 1:
        return x
    return 1.0 - F.max_pool2d(1.0 - x, stride, stride)


def keep_weight(masks: Sequence[np.ndarray], border: float, device: torch.device) -> Tensor:
    """(1, 1, H, W) share of the content in the delivered picture: 1 on the pixels no mask
    holds, falling to 0 over ``border`` pixels into the styled regions."""
    styled = np.logical_or.reduce(masks)
    return _feather(_tensor(~styled, device), border)


def keep_content(picture: Image.Image, content: Image.Image, weight: Tensor) -> Image.Image:
    """``picture`` with ``content`` (the same size) blended in by ``weight`` (``keep_weight``)."""
    if not bool(weight.any()):
        return picture
    device = weight.device
    mixed = torch.lerp(to_tensor(picture, device), to_tensor(content, device), weight)
    return to_image(mixed)


def blend(
    pictures: Sequence[Image.Image], masks: Sequence[np.ndarray], border: float
) -> Image.Image:
    """The instant tier's regions: each style's picture (all at the masks' size) weighted by
    its mask feathered over ``border`` pixels, the weights normalised to sum to one (pixels
    that no region reaches, deep in the keep region, are black until ``keep_content``)."""
    device = torch.device("cpu")
    weights = torch.cat([_feather(_tensor(m, device), border) for m in masks], dim=1)
    total = weights.sum(dim=1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp_min(1e-12), weights)
    stacked = torch.cat([to_tensor(p, device) for p in pictures], dim=0)
    return to_image((weights.permute(1, 0, 2, 3) * stacked).sum(dim=0, keepdim=True))
