"""Builds the messages a client sends, from what a caller passes to its calls.

Shared by the sync and asyncio clients. Names, types and closed choices of the options are
checked here before anything is sent, so a typo fails at once with the field's name; ranges
that depend on a server's limits (sizes, iteration counts) are left to the server, so a server
started with raised limits is usable. Only the options the caller set travel: the server fills
in the rest from the preset.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from styleserve.convert import to_proto
from styleserve.errors import InvalidArgument
from styleserve.options import (
    STYLE_FIELDS,
    OptionsError,
    StyleOptions,
    check_pictures,
    check_request_id,
    resolve,
)
from styleserve.pictures import PICTURE_TYPES, Picture, picture_message
from styleserve.regions import Regions, check_regions
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["Registration", "Styles", "build_registration", "build_request", "with_pictures"]

Styles = Picture | Sequence[Picture]
"""One style picture, or several to blend."""


def _style_list(styles: Styles | None) -> list[Picture]:
    if styles is None:
        return []
    if isinstance(styles, PICTURE_TYPES):
        return [styles]
    return list(styles)


def _checked_options(
    options: Mapping[str, Any], styles: int, init_image: bool
) -> tuple[pb.StyleOptions, pb.DeliveryOptions, StyleOptions]:
    """The wire options for the caller's ``options`` (None: the preset's), and the options
    they resolve to with ``styles`` pictures. Raises InvalidArgument naming the field."""
    set_options = {name: value for name, value in options.items() if value is not None}
    if init_image:
        set_options.setdefault("init", "image")
    preset = set_options.pop("preset", "default")
    try:
        resolved = resolve(preset, None, **set_options)
        check_pictures(resolved, styles, init_image)
        style_options, delivery = to_proto(set_options, preset)
    except OptionsError as err:
        raise InvalidArgument(str(err)) from err
    return style_options, delivery, resolved


def _blend(resolved: StyleOptions, styles: int) -> tuple[float, ...]:
    """Each style picture's blend weight on the wire; all 0 means equal shares."""
    return resolved.style_blend or (0.0,) * styles


def _style_pictures(styles: list[Picture], blend: Sequence[float]) -> list[pb.StylePicture]:
    return [
        pb.StylePicture(image=picture_message(style, what="style picture"), blend_weight=weight)
        for style, weight in zip(styles, blend, strict=True)
    ]


def build_request(
    content: Picture,
    styles: Styles | None,
    *,
    init_image: Picture | None,
    request_id: str | None,
    options: Mapping[str, Any],
    style_id: str | None = None,
    regions: Regions | None = None,
    detachable: bool = False,
) -> pb.StyleTransferRequest:
    """The request for ``content`` in the style of ``styles`` (or of the registered
    ``style_id``) with the caller's ``options`` (StyleOptions fields; None or absent means the
    preset's value), each style painting its own part of the picture with ``regions``; a
    ``detachable`` job outlives a dropped call (``styleserve.resume``)."""
    style_list = _style_list(styles)
    if style_id and style_list:
        raise InvalidArgument("style_id: send a style_id or style pictures, not both")
    if style_id and options.get("style_blend"):
        raise InvalidArgument("style_blend: a registered style holds its blend; register another")
    try:
        if request_id:
            check_request_id(request_id)
    except OptionsError as err:
        raise InvalidArgument(str(err)) from err
    # A registered style's pictures are on the server: check the options as for one picture.
    count = len(style_list) if not style_id else 1
    style_options, delivery, resolved = _checked_options(options, count, init_image is not None)
    regions_message = _regions(regions, None if style_id else count, resolved)
    return pb.StyleTransferRequest(
        content=picture_message(content, what="content picture"),
        styles=_style_pictures(style_list, _blend(resolved, count)) if style_list else [],
        options=style_options,
        delivery=delivery,
        init_image=picture_message(init_image, what="initial picture")
        if init_image is not None
        else None,
        # A detachable request is sent again after a break before it started
        # (``styleserve.resume``): its id is what lets the server find the job it started.
        request_id=request_id or (uuid.uuid4().hex if detachable else ""),
        style_id=style_id or "",
        regions=regions_message,
        detachable=detachable,
    )


def _regions(
    regions: Regions | None, styles: int | None, resolved: StyleOptions
) -> pb.Regions | None:
    """The wire message of ``regions`` for ``styles`` style pictures (None: a registered
    style's, counted by the server). Raises InvalidArgument naming the field."""
    if regions is None:
        return None
    if resolved.style_blend:
        raise InvalidArgument(
            "style_blend: with regions each style paints its own region and none are "
            "blended; leave style_blend unset"
        )
    try:
        message = regions.to_proto()
        check_regions(message, styles)
    except OptionsError as err:
        raise InvalidArgument(str(err)) from err
    return message


@dataclass(frozen=True)
class Registration:
    """A style as registered: the RegisterStyle request, and the values of the options that
    decide its targets (STYLE_FIELDS), which every job naming it runs with."""

    request: pb.RegisterStyleRequest
    style_options: dict[str, Any]


def build_registration(styles: Styles, options: Mapping[str, Any]) -> Registration:
    """The RegisterStyle request for ``styles`` with the options that decide style targets."""
    style_list = _style_list(styles)
    style_options, _, resolved = _checked_options(options, len(style_list), False)
    pictures = _style_pictures(style_list, _blend(resolved, len(style_list)))
    return Registration(
        pb.RegisterStyleRequest(styles=pictures, options=style_options),
        # The backbone only where the caller chose it: a server fills in the one it serves.
        {
            name: getattr(resolved, name)
            for name in STYLE_FIELDS
            if name != "backbone" or style_options.HasField("backbone")
        },
    )


def with_pictures(request: pb.StyleTransferRequest, style: Registration) -> pb.StyleTransferRequest:
    """``request``, which named a registered style, sending that style's pictures instead, with
    the style's options set explicitly: the same job on a server that does not hold it."""
    direct = pb.StyleTransferRequest()
    direct.CopyFrom(request)
    direct.ClearField("style_id")
    direct.styles.extend(style.request.styles)
    options, _ = to_proto(style.style_options, request.options.preset)
    for field, _value in options.ListFields():
        if field.is_repeated:
            direct.options.ClearField(field.name)  # replaced below, not appended to
    direct.options.MergeFrom(options)
    return direct
