"""A request's regions read into one label per output pixel, before the job may queue.

Masks and label maps come at any resolution with the content's aspect ratio; the engine needs
to know, for each pixel of the output, which style paints it or whether it keeps the content.
``inputs`` checks their headers and decodes them one at a time; this module reduces each to
the output's size at once (a mask by area averaging, then white at 128 or more; a label map by
nearest neighbour, so that no colour is blended into another) and judges the pixels: no
region may be empty or overlap another, and a label map may hold no colour that names no
region. What comes out is one byte per output pixel (``RegionLabels``), all a queued job keeps
of its masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from styleserve.options import OptionsError

__all__ = [
    "ASPECT_TOLERANCE",
    "RegionLabels",
    "check_aspect",
    "from_label_map",
    "from_masks",
    "label_pixels",
    "mask_pixels",
]

# How far a mask's aspect ratio may be from the content's (relative): a mask exported at
# another resolution rounds its sides to whole pixels.
ASPECT_TOLERANCE = 0.01
# The label of the pixels that keep the content (styles are 0, 1, ...; at most 64 of them).
_KEEP = 255
# Grey levels from which a resized mask's pixel is in the region (127.5, half white, rounds
# to it).
_WHITE = 128


@dataclass(frozen=True)
class RegionLabels:
    """Which style paints each output pixel: ``labels`` is (height, width), the style's index,
    or another value where the content is kept; ``count`` styles."""

    labels: np.ndarray
    count: int

    def masks(self) -> list[np.ndarray]:
        """One boolean (height, width) mask per style, in the styles' order."""
        return [self.labels == i for i in range(self.count)]


def check_aspect(field: str, size: tuple[int, int], content: tuple[int, int]) -> None:
    """The picture of (upright) ``size`` at ``field`` has the aspect ratio of the content's
    ``content`` size, within ASPECT_TOLERANCE. Raises OptionsError naming the field."""
    ratio, wanted = size[0] / size[1], content[0] / content[1]
    if abs(ratio / wanted - 1.0) > ASPECT_TOLERANCE:
        raise OptionsError(
            field,
            f"is {size[0]}x{size[1]}, another aspect ratio than the content's "
            f"{content[0]}x{content[1]}: send it at the content's proportions (any resolution)",
        )


def mask_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A grey mask's levels at ``size`` (width, height), each output pixel the mean of the
    mask's pixels it covers (uint8): its region is where they are ``_WHITE`` or more."""
    levels: np.ndarray = np.asarray(image.convert("L").resize(size, Image.Resampling.BOX))
    return levels


def label_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A label map's colours (0xRRGGBB) at ``size`` (width, height)."""
    rgb = np.asarray(image.convert("RGB").resize(size, Image.Resampling.NEAREST), np.uint32)
    packed: np.ndarray = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return packed


def _empty(field: str, size: tuple[int, int]) -> OptionsError:
    return OptionsError(
        field,
        f"marks no pixel of the {size[0]}x{size[1]} output: give every style a region, or "
        "send that style without regions",
    )


def from_masks(masks: Sequence[np.ndarray], keep: np.ndarray | None) -> RegionLabels:
    """The labels of one mask per style and an optional ``keep`` mask (their levels at the
    output's size, ``mask_pixels``). Raises OptionsError naming an empty or overlapping mask.
    An output pixel that two masks each cover half of (complementary masks, a boundary
    halved by the resize: both at ``_WHITE``) is the earlier one's, not an overlap."""
    labels = np.full(masks[0].shape, _KEEP, np.uint8)
    claimed = np.zeros(masks[0].shape, np.uint8)  # the level of the mask each pixel is in
    for i, levels in enumerate([*masks, *([] if keep is None else [keep])]):
        field = "regions.keep_mask" if i == len(masks) else f"regions.style_masks[{i}]"
        region = levels >= _WHITE
        if i < len(masks) and not region.any():
            raise _empty(field, region.shape[::-1])
        taken = region & (labels != _KEEP)
        halved = taken & (levels == _WHITE) & (claimed == _WHITE)
        taken &= ~halved
        if taken.any():
            raise _overlap(field, f"style_masks[{labels[taken][0]}]", int(taken.sum()))
        region &= ~halved
        if i < len(masks):
            labels[region] = i
            claimed[region] = levels[region]
    return RegionLabels(labels, len(masks))


def _overlap(field: str, other: str, pixels: int) -> OptionsError:
    return OptionsError(
        field, f"overlaps {other} in {pixels} output pixels: regions must not overlap"
    )


def from_label_map(
    colors: np.ndarray, style_colors: Sequence[int], keep_color: int | None
) -> RegionLabels:
    """The labels of a label map's ``colors`` (``label_pixels``), each style's region the
    pixels of its colour in ``style_colors`` and the kept ones those of ``keep_color`` (None:
    none). Raises OptionsError naming a colour that marks no pixel, or the map when it holds
    a colour that names no region."""
    labels = np.full(colors.shape, _KEEP, np.uint8)
    named = np.zeros(colors.shape, bool)
    for i, color in enumerate(style_colors):
        region = colors == color
        if not region.any():
            raise _empty(f"regions.style_colors[{i}]", colors.shape[::-1])
        labels[region] = i
        named |= region
    if keep_color is not None:
        named |= colors == keep_color
    if not named.all():
        stray = colors[~named]
        raise OptionsError(
            "regions.label_map",
            f"has pixels of colour #{int(stray[0]):06x} ({stray.size} output pixels), which "
            "is no style's colour nor keep_color: name it, or repaint them (a label map must "
            "be lossless and unsmoothed)",
        )
    return RegionLabels(labels, len(style_colors))
