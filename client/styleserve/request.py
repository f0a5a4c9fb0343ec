"""Builds a StyleTransfer request from what a caller passes to ``stylize`` / ``stream``.

Shared by the sync and asyncio clients. Options are checked here against the shared limits
before anything is sent, so a typo or an out-of-range value fails at once with the field's
name; only the options the caller set travel, the server fills in the rest from the preset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from styleserve.convert import to_proto
from styleserve.errors import InvalidArgument
from styleserve.options import OptionsError, resolve
from styleserve.pictures import PICTURE_TYPES, Picture, encode_picture
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["Styles", "build_request"]

Styles = Picture | Sequence[Picture]
"""One style picture, or several to blend."""


def _style_list(styles: Styles) -> list[Picture]:
    if isinstance(styles, PICTURE_TYPES):
        return [styles]
    return list(styles)


def build_request(
    content: Picture,
    styles: Styles,
    *,
    init_image: Picture | None,
    request_id: str | None,
    options: dict[str, Any],
) -> pb.StyleTransferRequest:
    """The request for ``content`` in the style of ``styles`` with the caller's ``options``
    (StyleOptions fields; None or absent means the preset's value)."""
    set_options = {name: value for name, value in options.items() if value is not None}
    if init_image is not None:
        set_options.setdefault("init", "image")
    style_list = _style_list(styles)
    if not style_list:
        raise InvalidArgument("styles: give at least one style picture")
    preset = set_options.pop("preset", "default")
    try:
        resolve(preset, **set_options)
        style_options, delivery = to_proto(set_options, preset)
    except OptionsError as err:
        raise InvalidArgument(str(err)) from err
    blend = tuple(set_options.get("style_blend", ())) or (0.0,) * len(style_list)
    if len(blend) != len(style_list):
        raise InvalidArgument(
            f"style_blend: give one weight per style picture ({len(style_list)}), got {len(blend)}"
        )
    return pb.StyleTransferRequest(
        content=pb.Image(data=encode_picture(content, what="content picture")),
        styles=[
            pb.StylePicture(
                image=pb.Image(data=encode_picture(style, what="style picture")),
                blend_weight=weight,
            )
            for style, weight in zip(style_list, blend, strict=True)
        ],
        options=style_options,
        delivery=delivery,
        init_image=pb.Image(data=encode_picture(init_image, what="initial picture"))
        if init_image is not None
        else None,
        request_id=request_id or "",
    )
