"""Translates between ``styleserve.options`` and the wire messages, in both directions.

The client turns the options it resolved into a request and the server turns the request
back into ``resolve`` arguments; both use this one module (no torch) so that the two sides
cannot drift apart. Names and values reach ``to_proto`` resolved, so it checks neither again.
The mapping is read from the message descriptors, not from hand-kept lists: every
``StyleOptions`` and ``DeliveryOptions`` field is the option of the same name (one rename:
``normalization`` is the ``loss_normalization`` option), an enum maps to the option strings
by name (``OPTIMIZER_LBFGS`` <-> ``"lbfgs"``), and a test checks that every option has a field.

Unset fields become ``None`` ("take the preset's value"): proto3 ``optional`` scalars by
presence, enums by their zero value, repeated fields when empty, and delivery scalars when 0.
float32 wire values come back as the shortest decimal that round-trips (``0.025`` stays
``0.025``, not ``0.02500000037252903``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from styleserve.options import PRESETS, OptionsError, StyleOptions, shown
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = [
    "DELIVERY_FIELDS",
    "OFF_WIRE_OPTIONS",
    "delivery_to_proto",
    "effective_options",
    "from_proto",
    "options_to_proto",
    "request_field",
    "to_proto",
]

# Wire field name -> option name, where they differ. ``normalization`` (an enum) replaced the
# string field ``loss_normalization``, which stays readable for older clients.
_RENAMED = {"normalization": "loss_normalization"}
_DEPRECATED_STRING = "loss_normalization"
# Options that no options message carries: each style picture's ``blend_weight`` holds its
# share, and the preset is StyleOptions' plain string ``preset``.
OFF_WIRE_OPTIONS = frozenset({"style_blend"})
# Wire fields that are no option of the job: how its messages travel, which the SDK sets from
# its channel (a picture looks the same however it arrives).
_TRANSPORT_FIELDS = frozenset({"max_message_bytes"})


@dataclass(frozen=True)
class _Field:
    """One option's wire field."""

    option: str
    descriptor: FieldDescriptor
    message: str  # "options" or "delivery"

    @property
    def wire(self) -> str:
        return self.descriptor.name

    @property
    def repeated(self) -> bool:
        return bool(self.descriptor.is_repeated)

    @property
    def enum(self) -> EnumDescriptor | None:
        return self.descriptor.enum_type

    @property
    def is_float(self) -> bool:
        return self.descriptor.type == FieldDescriptor.TYPE_FLOAT


def _fields(message_type: type[Message], message: str) -> dict[str, _Field]:
    return {
        _RENAMED.get(f.name, f.name): _Field(
            _RENAMED.get(f.name, f.name), cast(FieldDescriptor, f), message
        )
        for f in message_type.DESCRIPTOR.fields
        if f.name != "preset" and f.name not in _TRANSPORT_FIELDS and not f.GetOptions().deprecated
    }


_FIELDS: dict[str, _Field] = {
    **_fields(pb.StyleOptions, "options"),
    **_fields(pb.DeliveryOptions, "delivery"),
}
DELIVERY_FIELDS = tuple(name for name, f in _FIELDS.items() if f.message == "delivery")


def request_field(field: str, options: pb.StyleOptions | None = None) -> str:
    """The request field that carries the option an OptionsError names (``field``: an option's
    name, perhaps indexed: ``style_layers[2]``): ``options.<wire name>`` or
    ``delivery.<wire name>``; ``style_blend``'s weights are the style pictures' ``blend_weight``.
    ``options``, the request's: the deprecated string is named where it carried the value.
    """
    name, bracket, index = field.partition("[")
    if name == "style_blend":
        return f"styles[{index}.blend_weight" if bracket else "styles[].blend_weight"
    if name == _DEPRECATED_STRING and options is not None and _from_deprecated_string(options):
        return f"options.{_DEPRECATED_STRING}"
    known = _FIELDS.get(name)
    if known is None:
        return f"options.{field}"
    return f"{known.message}.{known.wire}{bracket}{index}"


def _shortest(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value`` (NaN/inf pass through)."""
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    single: float = struct.unpack("<f", packed)[0]
    for digits in range(6, 10):
        candidate = float(f"{single:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return single


def _prefix(enum: EnumDescriptor) -> str:
    """``OPTIMIZER_`` for Optimizer: what every value name of ``enum`` starts with."""
    return enum.values[0].name.removesuffix("UNSPECIFIED")


def _enum_to_name(name: str, number: int, enum: EnumDescriptor) -> str | None:
    if number == 0:
        return None
    value = enum.values_by_number.get(number)
    if value is None:
        raise OptionsError(
            name, f"unknown value {number}: client and server versions differ, upgrade the older"
        )
    return value.name.removeprefix(_prefix(enum)).lower()


def _name_to_enum(value: str, enum: EnumDescriptor) -> int:
    """The number of the enum value named by a closed choice (``"lbfgs"``: OPTIMIZER_LBFGS);
    a test keeps every choice named in its enum."""
    return int(enum.values_by_name[_prefix(enum) + value.upper()].number)


def _read(field: _Field, message: Message) -> Any:
    """The option's value in ``message``, or None when the field is unset."""
    value = getattr(message, field.wire)
    if field.repeated:
        if not value:
            return None
        return [_shortest(v) for v in value] if field.is_float else list(value)
    if field.enum is not None:
        return _enum_to_name(field.option, value, field.enum)
    if field.descriptor.has_presence:
        if not message.HasField(field.wire):
            return None
    elif not value:
        return None
    return _shortest(value) if field.is_float else value


def from_proto(
    options: pb.StyleOptions,
    delivery: pb.DeliveryOptions | None = None,
    blend: Sequence[float] = (),
) -> tuple[str, dict[str, Any]]:
    """``(preset, overrides)`` for ``styleserve.options.resolve`` from the wire messages.

    ``blend`` holds each style picture's ``blend_weight``; all zero means equal shares.
    Raises OptionsError for enum values this version does not know.
    """
    messages: dict[str, Message | None] = {"options": options, "delivery": delivery}
    overrides: dict[str, Any] = {}
    for name, field in _FIELDS.items():
        message = messages[field.message]
        if message is not None:
            overrides[name] = _read(field, message)
    if _from_deprecated_string(options):
        overrides["loss_normalization"] = getattr(options, _DEPRECATED_STRING)
    weights = [_shortest(w) for w in blend]
    overrides["style_blend"] = weights if any(w != 0 for w in weights) else None
    return options.preset or "default", {k: v for k, v in overrides.items() if v is not None}


def _from_deprecated_string(options: pb.StyleOptions) -> bool:
    """Whether ``options`` gives the normalisation by the deprecated string alone (the enum,
    where set, wins)."""
    return not options.normalization and options.HasField(_DEPRECATED_STRING)


def to_proto(
    options: StyleOptions, names: Collection[str] | None = None
) -> tuple[pb.StyleOptions, pb.DeliveryOptions]:
    """The wire messages of resolved ``options``: the fields of the options ``names`` holds
    (None: every option), the preset among them. ``style_blend`` is on neither message: it
    goes on each StylePicture's ``blend_weight``. Raises OptionsError for a value its field
    cannot hold (an integer past the field's range: a client leaves sizes to the server)."""
    style, delivery = pb.StyleOptions(), pb.DeliveryOptions()
    if names is None or "preset" in names:
        style.preset = options.preset
    messages: dict[str, Message] = {"options": style, "delivery": delivery}
    for name, field in _FIELDS.items():
        value = getattr(options, name)
        if value is None or (names is not None and name not in names):
            continue
        message = messages[field.message]
        if field.enum is not None:
            setattr(message, field.wire, _name_to_enum(value, field.enum))
        elif field.repeated:
            getattr(message, field.wire).extend(value)
        else:
            try:
                setattr(message, field.wire, value)
            except (TypeError, ValueError) as err:
                raise OptionsError(name, f"cannot be sent as {shown(value)}: {err}") from None
    return style, delivery


def options_to_proto(options: StyleOptions) -> pb.StyleOptions:
    """Every field of resolved ``options`` on the wire (the effective options of a result)."""
    return to_proto(options)[0]


def delivery_to_proto(options: StyleOptions) -> pb.DeliveryOptions:
    """The delivery part of resolved ``options``."""
    return to_proto(options, DELIVERY_FIELDS)[1]


def effective_options(message: pb.StyleOptions) -> StyleOptions:
    """The StyleOptions a result reports (``Result.effective_options``), without re-validating
    them against this client's limits: the server has done that with its own."""
    preset, overrides = from_proto(message)
    for name, field in _FIELDS.items():
        if field.repeated and name in overrides:
            overrides[name] = tuple(overrides[name])
    return PRESETS.get(preset, StyleOptions()).replace(**overrides)
