"""Options survive the trip to the wire and back, unset stays unset, float32 stays tidy."""

from __future__ import annotations

import dataclasses

import pytest
from styleserve.convert import (
    delivery_to_proto,
    effective_options,
    from_proto,
    options_to_proto,
    to_proto,
)
from styleserve.options import PRESETS, OptionsError, StyleOptions, resolve
from styleserve.v1 import style_transfer_pb2 as pb


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_exactly(name):
    options = PRESETS[name].replace(seed=12, style_layer_weights=(0.1, 0.2, 0.3, 0.2, 0.2))
    assert effective_options(options_to_proto(options)) == options
    preset, overrides = from_proto(options_to_proto(options), delivery_to_proto(options))
    assert resolve(preset, **overrides) == options


def test_unset_fields_stay_unset_and_take_the_presets_values():
    options = resolve("seed", content_weight=0.025, optimizer="adam")
    message, delivery = to_proto(options, {"preset", "content_weight", "optimizer"})
    assert not message.HasField("iterations") and not message.HasField("seed")
    preset, overrides = from_proto(message, delivery, [0.0, 0.0])
    # Delivery scalars at 0 are unset too: every preset sends no previews.
    expected = {"content_weight": 0.025, "optimizer": "adam"}
    assert (preset, overrides) == ("seed", expected)
    assert resolve(preset, **overrides).iterations == PRESETS["seed"].iterations


def test_blend_weights_and_delivery_come_from_their_own_messages():
    options = StyleOptions(output_format="webp", preview_every=5, preview_size=64)
    delivery = delivery_to_proto(options)
    assert delivery.output_format == pb.OUTPUT_FORMAT_WEBP
    _, overrides = from_proto(pb.StyleOptions(), delivery, [3.0, 1.0])
    assert overrides == {
        "style_blend": [3.0, 1.0],
        "preview_every": 5,
        "preview_size": 64,
        "output_format": "webp",
        "output_quality": options.output_quality,
    }


def test_unknown_enum_values_and_unsendable_numbers_name_their_field():
    with pytest.raises(OptionsError) as bad_enum:
        from_proto(pb.StyleOptions(precision=42))
    assert bad_enum.value.field == "precision"
    # The client leaves sizes to the server's limits: one past the wire's range stops here.
    with pytest.raises(OptionsError) as too_big:
        to_proto(resolve("default", None, size=2**40))
    assert too_big.value.field == "size" and "cannot be sent" in str(too_big.value)


CHOICES = [
    (f.name, choice) for f in dataclasses.fields(StyleOptions) for choice in f.metadata["choices"]
]


@pytest.mark.parametrize(("name", "choice"), CHOICES)
def test_every_closed_choice_travels_as_itself(name, choice):
    """``to_proto`` maps a resolved choice without checking it again: each one must be a value
    of its field's enum (or the plain string it is, for the preset and the backbone)."""
    message, delivery = to_proto(StyleOptions().replace(**{name: choice}))
    preset, overrides = from_proto(message, delivery)
    assert {"preset": preset, **overrides}[name] == choice


def test_every_option_has_one_wire_field():
    """The mapping is derived from the descriptors: a new option without a field fails here."""
    from styleserve.convert import _FIELDS, OFF_WIRE_OPTIONS

    options = {f.name for f in dataclasses.fields(StyleOptions)} - {"preset"}
    assert options - OFF_WIRE_OPTIONS == set(_FIELDS)


def test_the_deprecated_normalization_string_is_still_read():
    message = pb.StyleOptions(loss_normalization="tutorial")
    assert from_proto(message)[1] == {"loss_normalization": "tutorial"}
    message.normalization = pb.LOSS_NORMALIZATION_SIZE_INDEPENDENT
    assert from_proto(message)[1] == {"loss_normalization": "size_independent"}
    tutorial = StyleOptions(loss_normalization="tutorial")
    assert to_proto(tutorial, {"loss_normalization"})[0].normalization == (
        pb.LOSS_NORMALIZATION_TUTORIAL
    )
