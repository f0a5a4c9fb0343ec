"""Regions: which part of the picture each style paints, and which part keeps the content.

A caller describes them one of two ways (``styleserve.v1.Regions``): one grey mask per style
picture, or one colour-coded label map with a colour per style. What can be judged without
reading the pictures' pixels (counts, which of the two ways, colour values) is checked by
``check_regions``, which the SDK runs before it sends and the server when a request arrives,
so that both refuse alike, naming the field; the pixels themselves (aspect ratios, empty or
overlapping regions, colours no style names) only the server reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from styleserve.options import OptionsError, shown
from styleserve.pictures import PICTURE_TYPES, Picture, picture_message
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["MAX_COLOR", "Regions", "check_regions", "parse_color"]

# Colours are 0xRRGGBB.
MAX_COLOR = 0xFFFFFF


def parse_color(value: int | str, field: str = "color") -> int:
    """``value`` as 0xRRGGBB: an int, or hex digits "RRGGBB" (with "#" or "0x" before them,
    or neither). Raises OptionsError naming ``field``."""
    if isinstance(value, str):
        digits = value.strip().removeprefix("#").removeprefix("0x").removeprefix("0X")
        if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise OptionsError(field, f"name a colour as RRGGBB hex digits, got {shown(value)}")
        return int(digits, 16)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COLOR:
        raise OptionsError(field, f"name a colour as 0xRRGGBB, got {shown(value)}")
    return value


@dataclass(frozen=True)
class Regions:
    """Where each style picture paints: ``style_masks`` (one grey mask per style picture, in
    their order: white is its region; pixels in no mask keep the content, as does
    ``keep_mask``), or a ``label_map`` whose colours ``style_colors`` name (one per style
    picture, 0xRRGGBB or "RRGGBB"; pixels of ``keep_color`` keep the content). Masks and maps
    need the content's aspect ratio; they are resized to the output. With regions the styles
    are not blended (leave ``style_blend`` unset); the ``region_border`` option says how far
    (output pixels) a style may reach past its region's edge."""

    style_masks: Sequence[Picture] = ()
    label_map: Picture | None = None
    style_colors: Sequence[int | str] = ()
    keep_color: int | str | None = None
    keep_mask: Picture | None = None

    def to_proto(self) -> pb.Regions:
        """The wire message (pictures read and encoded, colours parsed). Raises OptionsError
        naming a bad colour."""
        # One picture (a path is a sequence of characters too) is a list of one.
        masks = (
            [self.style_masks] if isinstance(self.style_masks, PICTURE_TYPES) else self.style_masks
        )
        message = pb.Regions(
            style_masks=[picture_message(m, what="style mask") for m in masks],
            style_colors=[
                parse_color(c, f"regions.style_colors[{i}]")
                for i, c in enumerate(self.style_colors)
            ],
        )
        if self.label_map is not None:
            message.label_map.CopyFrom(picture_message(self.label_map, what="label map"))
        if self.keep_mask is not None:
            message.keep_mask.CopyFrom(picture_message(self.keep_mask, what="keep mask"))
        if self.keep_color is not None:
            message.keep_color = parse_color(self.keep_color, "regions.keep_color")
        return message


def check_regions(regions: pb.Regions, styles: int | None) -> None:
    """What ``regions`` need of themselves and of the ``styles`` style pictures they go with
    (None: not known here, a registered style's), pixels aside. Raises OptionsError naming
    the field."""
    masks = len(regions.style_masks)
    if masks and regions.HasField("label_map"):
        raise OptionsError("regions.label_map", "send style_masks or a label_map, not both")
    if masks:
        _check_masks(regions, masks, styles)
    elif regions.HasField("label_map"):
        _check_label_map(regions, styles)
    else:
        raise OptionsError(
            "regions", "send one style mask per style picture, or a label_map with style_colors"
        )


def _check_masks(regions: pb.Regions, masks: int, styles: int | None) -> None:
    for name in ("style_colors", "keep_color"):
        if _has(regions, name):
            raise OptionsError(
                f"regions.{name}", "names a label_map's colour: send a label_map, or no colours"
            )
    if styles is not None and masks != styles:
        raise OptionsError(
            "regions.style_masks", f"send one mask per style picture ({styles}), got {masks}"
        )


def _check_label_map(regions: pb.Regions, styles: int | None) -> None:
    if regions.HasField("keep_mask"):
        raise OptionsError(
            "regions.keep_mask", "goes with style_masks; with a label_map, name keep_color"
        )
    colors = list(regions.style_colors)
    if (styles is not None and len(colors) != styles) or not colors:
        wanted = "each style picture" if styles is None else f"each of the {styles} style pictures"
        raise OptionsError(
            "regions.style_colors", f"give one colour for {wanted}, got {len(colors)}"
        )
    seen: dict[int, int] = {}
    for i, color in enumerate(colors):
        field = f"regions.style_colors[{i}]"
        parse_color(color, field)
        if color in seen:
            raise OptionsError(field, f"repeats style_colors[{seen[color]}]: give each its own")
        seen[color] = i
    if regions.HasField("keep_color"):
        keep = parse_color(regions.keep_color, "regions.keep_color")
        if keep in seen:
            raise OptionsError(
                "regions.keep_color", f"is style_colors[{seen[keep]}]'s colour: give it its own"
            )


def _has(regions: pb.Regions, name: str) -> bool:
    """Whether ``regions``' field ``name`` is set (a list: not empty)."""
    value = getattr(regions, name)
    return bool(value) if name == "style_colors" else regions.HasField(name)
