"""Translates between ``styleserve.options`` and the wire messages, in both directions.

The client turns keyword options into a request and the server turns the request back into
``resolve`` arguments; both use this one module (no torch) so that a field added to the
options is mapped once and the two sides cannot drift apart. Unset proto fields become
``None`` ("take the preset's value"), enums map to the option strings by name
(``OPTIMIZER_LBFGS`` <-> ``"lbfgs"``), and float32 wire values come back as the shortest
decimal that round-trips (``0.025`` stays ``0.025``, not ``0.02500000037252903``).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from styleserve.options import PRESETS, OptionsError, StyleOptions
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "DELIVERY_FIELDS",
    "delivery_to_proto",
    "effective_options",
    "from_proto",
    "options_to_proto",
    "to_proto",
]

# Option fields carried by proto3 `optional` scalars: presence means "set".
_SCALARS = (
    "backbone",
    "size",
    "width",
    "height",
    "iterations",
    "evals_per_iteration",
    "learning_rate",
    "content_weight",
    "style_weight",
    "tv_weight",
    "tv_power",
    "style_scale",
    "preserve_color",
    "style_strength",
    "seed",
    "loss_normalization",
)
# Repeated fields: empty means "take the preset's".
_REPEATED = ("content_layers", "style_layers", "style_layer_weights", "scales")
# Enums whose zero value (_UNSPECIFIED) means "take the preset's".
_ENUMS: dict[str, tuple[EnumTypeWrapper, str]] = {
    "method": (pb.Method, "METHOD_"),
    "optimizer": (pb.Optimizer, "OPTIMIZER_"),
    "init": (pb.Init, "INIT_"),
    "precision": (pb.Precision, "PRECISION_"),
    "resize": (pb.ResizeFilter, "RESIZE_FILTER_"),
}
_OUTPUT_FORMAT = (pb.OutputFormat, "OUTPUT_FORMAT_")
# Wire floats are float32; these come back through _shortest.
_FLOATS = frozenset(
    {
        "learning_rate",
        "content_weight",
        "style_weight",
        "tv_weight",
        "tv_power",
        "style_scale",
        "style_strength",
        "style_layer_weights",
        "scales",
    }
)
# Options that travel in DeliveryOptions rather than StyleOptions.
DELIVERY_FIELDS = ("preview_every", "preview_size", "output_format", "output_quality")
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(StyleOptions))


def _shortest(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value`` (NaN/inf pass through)."""
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    single = struct.unpack("<f", packed)[0]
    for digits in range(6, 10):
        candidate = float(f"{single:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return single


def _enum_to_name(field: str, number: int, wrapper: EnumTypeWrapper, prefix: str) -> str | None:
    if number == 0:
        return None
    try:
        return wrapper.Name(number).removeprefix(prefix).lower()
    except ValueError:
        raise OptionsError(
            field, f"unknown value {number}: client and server versions differ, upgrade the older"
        ) from None


def _name_to_enum(field: str, name: str, wrapper: EnumTypeWrapper, prefix: str) -> int:
    try:
        return wrapper.Value(prefix + str(name).upper())
    except ValueError:
        choices = [n.removeprefix(prefix).lower() for n in wrapper.keys()[1:]]
        raise OptionsError(field, f"must be one of {', '.join(choices)}; got {name!r}") from None


def from_proto(
    options: pb.StyleOptions,
    delivery: pb.DeliveryOptions | None = None,
    blend: Sequence[float] = (),
) -> tuple[str, dict[str, Any]]:
    """``(preset, overrides)`` for ``styleserve.options.resolve`` from the wire messages.

    ``blend`` holds each style picture's ``blend_weight``; all zero means equal shares.
    Delivery fields left at 0 come back as None so that the server fills in its defaults.
    Raises OptionsError for enum values this version does not know.
    """
    overrides: dict[str, Any] = {}
    for name in _SCALARS:
        if options.HasField(name):
            value = getattr(options, name)
            overrides[name] = _shortest(value) if name in _FLOATS else value
    for name in _REPEATED:
        values = list(getattr(options, name))
        if values:
            overrides[name] = [_shortest(v) for v in values] if name in _FLOATS else values
    for name, (wrapper, prefix) in _ENUMS.items():
        overrides[name] = _enum_to_name(name, getattr(options, name), wrapper, prefix)
    weights = [_shortest(w) for w in blend]
    overrides["style_blend"] = weights if any(w != 0 for w in weights) else None
    if delivery is not None:
        overrides["preview_every"] = delivery.preview_every
        overrides["preview_size"] = delivery.preview_size or None
        overrides["output_format"] = _enum_to_name(
            "output_format", delivery.output_format, *_OUTPUT_FORMAT
        )
        overrides["output_quality"] = delivery.output_quality or None
    return options.preset or "default", {k: v for k, v in overrides.items() if v is not None}


def to_proto(
    overrides: Mapping[str, Any], preset: str = "default"
) -> tuple[pb.StyleOptions, pb.DeliveryOptions]:
    """The wire messages for ``preset`` with ``overrides`` (StyleOptions field names; None
    means unset). ``style_blend`` is not part of these messages: it goes on each
    StylePicture's ``blend_weight``. Raises OptionsError for an unknown name or enum value."""
    message = pb.StyleOptions(preset=preset)
    delivery = pb.DeliveryOptions()
    for name, value in overrides.items():
        if name not in _OPTION_NAMES:
            raise OptionsError(name, "unknown option")
        if value is None or name in ("style_blend", "preset"):
            continue
        if name in _ENUMS:
            setattr(message, name, _name_to_enum(name, value, *_ENUMS[name]))
        elif name == "output_format":
            delivery.output_format = _name_to_enum(name, value, *_OUTPUT_FORMAT)
        elif name in DELIVERY_FIELDS:
            setattr(delivery, name, value)
        elif name in _REPEATED:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message, delivery


def options_to_proto(options: StyleOptions) -> pb.StyleOptions:
    """Every field of resolved ``options`` on the wire (the effective options of a result)."""
    return to_proto(options.to_dict(), options.preset)[0]


def delivery_to_proto(options: StyleOptions) -> pb.DeliveryOptions:
    """The delivery part of resolved ``options``."""
    return to_proto({name: getattr(options, name) for name in DELIVERY_FIELDS})[1]


def effective_options(message: pb.StyleOptions) -> StyleOptions:
    """The StyleOptions a result reports (``Result.effective_options``), without re-validating
    them against this client's limits: the server has done that with its own."""
    preset, overrides = from_proto(message)
    for name in _REPEATED:
        if name in overrides:
            overrides[name] = tuple(overrides[name])
    return PRESETS.get(preset, StyleOptions()).replace(**overrides)
