"""Builds the messages a client sends, from what a caller passes to its calls.

Shared by the sync and asyncio clients. The options are resolved here once
(``styleserve.options.resolve_given``): names, types and closed choices are checked before
anything is sent, so a typo fails at once with the field's name; ranges that depend on a
server's limits (sizes, iteration counts) are left to the server, so a server started with
raised limits is usable. The request carries the values the client resolved, but for those a
server decides by itself where the caller left them (the backbone it serves, its delivery
defaults, a registered style's options). Every refusal of the client's own checks becomes
the SDK's InvalidArgument in one place, where the builders hand their messages out.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from styleserve.convert import to_proto
from styleserve.errors import InvalidArgument
from styleserve.options import (
    STYLE_FIELDS,
    OptionsError,
    ResolvedOptions,
    StyleOptions,
    check_pictures,
    check_request_id,
    check_video,
    resolve_given,
)
from styleserve.pictures import PICTURE_TYPES, Picture, picture_message
from styleserve.regions import Regions, check_regions
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "Registration",
    "Styles",
    "build_registration",
    "build_request",
    "check_options",
    "with_pictures",
]

Styles = Picture | Sequence[Picture]
"""One style picture, or several to blend."""

# What a server fills in where a request leaves it (``styleserve_server.inputs``): the backbone
# it serves and its delivery defaults (its settings).
_SERVER_DECIDES = frozenset({"backbone", "preview_size", "output_quality"})
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(StyleOptions))

_Parameters = ParamSpec("_Parameters")
_Built = TypeVar("_Built")


def _refusals_as_invalid_argument(
    build: Callable[_Parameters, _Built],
) -> Callable[_Parameters, _Built]:
    """``build`` raising InvalidArgument for an OptionsError, as a server answers it: the one
    place where the client's own checks become the SDK's error."""

    @functools.wraps(build)
    def checked(*args: _Parameters.args, **kwargs: _Parameters.kwargs) -> _Built:
        try:
            return build(*args, **kwargs)
        except OptionsError as err:
            raise InvalidArgument(str(err)) from err

    return checked


def _style_list(styles: Styles | None) -> list[Picture]:
    if styles is None:
        return []
    if isinstance(styles, PICTURE_TYPES):
        return [styles]
    return list(styles)


def _sent(resolved: ResolvedOptions, left: frozenset[str]) -> frozenset[str]:
    """The options a request carries: all those resolved but the ones in ``left`` (what the
    server decides) that the caller did not give."""
    return _OPTION_NAMES - (left - resolved.given)


def _blend(resolved: StyleOptions, styles: int) -> tuple[float, ...]:
    """Each style picture's blend weight on the wire; all 0 means equal shares."""
    return resolved.style_blend or (0.0,) * styles


def _style_pictures(styles: list[Picture], blend: Sequence[float]) -> list[pb.StylePicture]:
    return [
        pb.StylePicture(image=picture_message(style, what="style picture"), blend_weight=weight)
        for style, weight in zip(styles, blend, strict=True)
    ]


@_refusals_as_invalid_argument
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
    video: bool = False,
) -> pb.StyleTransferRequest:
    """The request for ``content`` in the style of ``styles`` (or of the registered
    ``style_id``) with the caller's ``options`` (StyleOptions fields; None or absent means the
    preset's value), each style painting its own part of the picture with ``regions``; a
    ``detachable`` job outlives a dropped call (``styleserve.resume``); a ``video``'s job is
    checked for what a video may not ask."""
    style_list = _style_list(styles)
    if request_id:
        check_request_id(request_id)
    resolved = _resolved(style_list, style_id, init_image is not None, options, video=video)
    count = len(style_list) if not style_id else 1
    regions_message = _regions(regions, None if style_id else count, resolved.options)
    left = _SERVER_DECIDES
    if style_id:
        # A registered style fixes its options: the job sends only those its caller repeats.
        left |= frozenset(STYLE_FIELDS)
    style_options, delivery = to_proto(resolved.options, _sent(resolved, left))
    return pb.StyleTransferRequest(
        content=picture_message(content, what="content picture"),
        styles=_style_pictures(style_list, _blend(resolved.options, count)) if style_list else [],
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


@_refusals_as_invalid_argument
def check_options(
    styles: Styles | None,
    *,
    style_id: str | None,
    init_image: bool,
    options: Mapping[str, Any],
    video: bool = False,
) -> StyleOptions:
    """The options of a job of ``options`` with ``styles`` (or ``style_id``) and
    ``init_image`` (whether one comes), for a ``video`` or a picture, resolved; InvalidArgument
    where such a job would be refused whatever its content: what a batch checks once rather
    than once per picture, and the CLI before any call."""
    return _resolved(_style_list(styles), style_id, init_image, options, video=video).options


def _resolved(
    style_list: Sequence[Picture],
    style_id: str | None,
    init_image: bool,
    options: Mapping[str, Any],
    *,
    video: bool = False,
) -> ResolvedOptions:
    if style_id and style_list:
        raise OptionsError("style_id", "send a style_id or style pictures, not both")
    if style_id and options.get("style_blend"):
        raise OptionsError("style_blend", "a registered style holds its blend; register another")
    resolved = resolve_given(options, init_image=init_image)
    # A registered style's pictures are on the server: check the options as for one picture.
    check_pictures(resolved.options, len(style_list) if not style_id else 1, init_image)
    if video:
        check_video(resolved.options)
    return resolved


def _regions(
    regions: Regions | None, styles: int | None, resolved: StyleOptions
) -> pb.Regions | None:
    """The wire message of ``regions`` for ``styles`` style pictures (None: a registered
    style's, counted by the server). Raises OptionsError naming the field."""
    if regions is None:
        return None
    if resolved.style_blend:
        raise OptionsError(
            "style_blend",
            "with regions each style paints its own region and none are blended; leave "
            "style_blend unset",
        )
    message = regions.to_proto()
    check_regions(message, styles)
    return message


@dataclass(frozen=True)
class Registration:
    """A style as registered: the RegisterStyle request, and the options it was resolved
    with, whose STYLE_FIELDS every job naming it runs with."""

    request: pb.RegisterStyleRequest
    resolved: ResolvedOptions

    @property
    def style_fields(self) -> frozenset[str]:
        """The options that decide its targets, as it sent them: the backbone only where its
        caller chose one (a server fills in the one it serves)."""
        return frozenset(STYLE_FIELDS) & _sent(self.resolved, _SERVER_DECIDES)


@_refusals_as_invalid_argument
def build_registration(styles: Styles, options: Mapping[str, Any]) -> Registration:
    """The RegisterStyle request for ``styles`` with the options that decide style targets."""
    style_list = _style_list(styles)
    resolved = resolve_given(options)
    check_pictures(resolved.options, len(style_list), False)
    style_options, _ = to_proto(resolved.options, _sent(resolved, _SERVER_DECIDES))
    pictures = _style_pictures(style_list, _blend(resolved.options, len(style_list)))
    return Registration(pb.RegisterStyleRequest(styles=pictures, options=style_options), resolved)


def with_pictures(request: pb.StyleTransferRequest, style: Registration) -> pb.StyleTransferRequest:
    """``request``, which named a registered style, sending that style's pictures instead, with
    the style's options set explicitly: the same job on a server that does not hold it."""
    direct = pb.StyleTransferRequest()
    direct.CopyFrom(request)
    direct.ClearField("style_id")
    direct.styles.extend(style.request.styles)
    options, _ = to_proto(style.resolved.options, style.style_fields)
    for field, _value in options.ListFields():
        if field.is_repeated:
            direct.options.ClearField(field.name)  # replaced below, not appended to
    direct.options.MergeFrom(options)
    return direct
