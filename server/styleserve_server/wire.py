"""Bounds a request by its wire encoding before protobuf parses it.

gRPC would hand the servicer a request it has parsed whole, on the event loop: a valid message
with millions of list entries takes tens of milliseconds to parse (2 million layer names: 41 ms
of the loop, when health checks wait), which no check after the parse gives back. The servicer
takes the bytes instead, and ``parse`` reads only their top level (and a StylizeVideo start's
job, a request of its own) first: each field's size from
its length prefix against what the largest valid field needs (the options at the limits'
ceilings take a few KB; a picture at most ``max_image_bytes``), and how many there are; only
then does protobuf parse a message whose every part is bounded. The one nested message that
can be large, a request's ``Regions`` (masks, a label map), is walked the same way.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import TypeVar, cast

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from styleserve.options import MAX_REQUEST_ID_LENGTH, Limits, OptionsError
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["MAX_OPTIONS_BYTES", "parse", "parse_each"]

M = TypeVar("M", bound=Message)

# The largest StyleOptions or DeliveryOptions a valid request can carry: every list and name at
# the ceilings of styleserve.options.CEILINGS stays far below it (tests/server/test_wire.py).
MAX_OPTIONS_BYTES = 64 * 1024
# Framing around a picture's bytes (an Image, or a StylePicture with its weight).
_PICTURE_FRAMING = 64
# Top-level fields a valid request has besides its style pictures (unknown ones included).
_OTHER_FIELDS = 16
# Fields of a valid Regions besides its masks and colours (label_map, keep_mask, keep_color),
# and the most bytes of one varint (a colour).
_OTHER_REGION_FIELDS = 3
_VARINT_BYTES = 10
# The fields that hold pictures, whose refusal says how to send a larger one.
_PICTURE_FIELDS = frozenset(
    {
        "content",
        "init_image",
        "styles",
        "regions.style_masks",
        "regions.label_map",
        "regions.keep_mask",
    }
)
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and the offset after it."""
    value = shift = 0
    while shift < 64 and at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise ValueError("a varint runs past the message")


def _sizes(data: bytes, most: int) -> list[tuple[int, int, int]]:
    """(field number, payload offset, payload bytes) of the top-level fields of ``data``, at
    most ``most``."""
    fields: list[tuple[int, int, int]] = []
    at = 0
    while at < len(data):
        if len(fields) == most:
            raise OverflowError
        key, at = _varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == _LENGTH_DELIMITED:
            size, at = _varint(data, at)
        elif kind == _VARINT:
            size = _varint(data, at)[1] - at
        elif kind in (_FIXED64, _FIXED32):
            size = 8 if kind == _FIXED64 else 4
        else:
            raise ValueError(f"wire type {kind} has no place in this contract")
        start = at
        at += size
        if at > len(data):
            raise ValueError("a field runs past the message")
        fields.append((number, start, size))
    return fields


@functools.cache
def _bounds(message: Descriptor, limits: Limits) -> Mapping[int, tuple[str, int]]:
    """Field number -> (name, most payload bytes) for the fields of ``message`` that can be
    large (once per message type: a server's limits do not change)."""
    picture = limits.max_image_bytes + _PICTURE_FRAMING
    by_name = {
        "content": picture,
        "init_image": picture,
        "styles": picture,
        "options": MAX_OPTIONS_BYTES,
        "delivery": MAX_OPTIONS_BYTES,
        # UTF-8 takes at most 4 bytes a character; the id's check then reads the characters.
        "request_id": 4 * MAX_REQUEST_ID_LENGTH,
        "style_id": 256,
        # An UploadPicture stream's header: a digest and a size. Its chunks are bounded by the
        # gRPC message limit, and counted against the declared size as they arrive (uploads).
        "header": 256,
        # A StylizeVideo frame: its index and picture.
        "frame": picture + _PICTURE_FRAMING,
        # A mask per style, a label map and a keep mask, and their colours; walked itself
        # (_check_regions) before anything parses it.
        "regions": (limits.max_styles + 2) * picture + (limits.max_styles + 1) * _VARINT_BYTES,
    }
    fields = message.fields_by_name
    return {fields[n].number: (n, most) for n, most in by_name.items() if n in fields}


@functools.cache
def _region_bounds(limits: Limits) -> Mapping[int, tuple[str, int]]:
    """Field number -> (name, most payload bytes) of the fields of a request's Regions."""
    picture = limits.max_image_bytes + _PICTURE_FRAMING
    by_name = {
        "style_masks": picture,
        "label_map": picture,
        "keep_mask": picture,
        # Packed, or one varint a field.
        "style_colors": limits.max_styles * _VARINT_BYTES,
        "keep_color": _VARINT_BYTES,
    }
    fields = pb.Regions.DESCRIPTOR.fields_by_name
    return {fields[n].number: (f"regions.{n}", most) for n, most in by_name.items()}


def _within(
    fields: list[tuple[int, int, int]], bounds: Mapping[int, tuple[str, int]], repeated: str
) -> int:
    """Checks each of ``fields`` against its bound (unbounded ones pass); returns how many of
    them are the field named ``repeated``."""
    repeats = 0
    for number, _, size in fields:
        field, most = bounds.get(number, ("", -1))
        repeats += field == repeated
        if most >= 0 and size > most and field in _PICTURE_FIELDS:
            raise OptionsError(
                field,
                f"takes {size} bytes, more than a picture may in a request"
                f" ({most - _PICTURE_FRAMING}, limits.max_image_bytes); a larger one goes by"
                " UploadPicture where the server takes uploads (GetServerInfo uploads.max_bytes"
                " above 0), named by its upload_id (the SDK does so by itself)",
            )
        if most >= 0 and size > most:
            raise OptionsError(field, f"takes {size} bytes, more than any valid one ({most})")
    return repeats


def _fields(field: str, name: str, data: bytes, most: int, why: str) -> list[tuple[int, int, int]]:
    """``_sizes`` of ``data``, a ``name`` message at ``field``; OptionsError naming ``field``
    when they are more than ``most`` (``why``: what bounds them) or no such message."""
    try:
        return _sizes(data, most)
    except OverflowError:
        raise OptionsError(field, f"has more fields than any valid {name}{why}") from None
    except ValueError as error:
        raise OptionsError(field, f"is not a {name} ({error})") from None


def _check_regions(data: bytes, limits: Limits) -> None:
    """Bounds a request's Regions as ``parse`` bounds the request: each field's size, and at
    most one mask (and one colour) per style."""
    most = 2 * limits.max_styles + _OTHER_REGION_FIELDS
    fields = _fields("regions", "Regions", data, most, f" (at most {limits.max_styles} masks)")
    masks = _within(fields, _region_bounds(limits), "regions.style_masks")
    if masks > limits.max_styles:
        raise OptionsError(
            "regions.style_masks",
            f"send one mask per style picture, at most {limits.max_styles}; got {masks}",
        )


# Messages inside a request that are walked as requests are (a StylizeVideo start's job).
_NESTED = {
    "start": cast(Descriptor, pb.VideoStart.DESCRIPTOR),
    "job": cast(Descriptor, pb.StyleTransferRequest.DESCRIPTOR),
}


def _check(descriptor: Descriptor, data: bytes, limits: Limits, prefix: str = "") -> None:
    """Bounds ``data``, a ``descriptor`` message at ``prefix`` (its fields' names in errors
    start with it), and the messages nested in it that ``_NESTED`` names."""
    bounds = _bounds(descriptor, limits)
    # Named whole (``start.job``), not as a field of itself.
    field = prefix.removesuffix(".") or "request"
    why = f" (at most {limits.max_styles} styles)" if "styles" in descriptor.fields_by_name else ""
    fields = _fields(field, descriptor.name, data, limits.max_styles + _OTHER_FIELDS, why)
    try:
        styles = _within(fields, bounds, "styles")
        if styles > limits.max_styles:
            raise OptionsError(
                "styles", f"send 1 to {limits.max_styles} style pictures, got {styles}"
            )
        for number, start, size in fields:
            if bounds.get(number, ("", -1))[0] == "regions":
                _check_regions(data[start : start + size], limits)
    except OptionsError as error:
        if not prefix:
            raise
        raise OptionsError(prefix + error.field, error.message) from None
    for number, start, size in fields:
        nested = descriptor.fields_by_number.get(number)
        if nested is not None and nested.name in _NESTED:
            inner = _NESTED[nested.name]
            _check(inner, data[start : start + size], limits, f"{prefix}{nested.name}.")


def parse(message: type[M], data: bytes, limits: Limits) -> M:
    """``data`` parsed as ``message`` once its top level (and a video start's job) is within
    bounds. Raises OptionsError naming the field (or the request) otherwise, and for bytes that
    are no such message."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    name = descriptor.name
    _check(descriptor, data, limits)
    try:
        return message.FromString(data)
    except DecodeError as error:
        raise OptionsError("request", f"is not a {name} ({error})") from None


async def parse_each(
    message: type[M], stream: AsyncIterator[bytes], limits: Limits
) -> AsyncIterator[M]:
    """A streamed request's messages, each parsed (``parse``) as it is read. An async
    generator, which touches ``stream`` only once read: a generator expression would take its
    iterator at once, and gRPC's, never read when a call is refused first, warns when it is
    collected ("coroutine _MessageReceiver._async_message_receiver was never awaited")."""
    async for data in stream:
        yield parse(message, data, limits)
