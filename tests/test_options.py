"""The shared options module resolves presets and names the bad field."""

import typing

import pytest
from styleserve.options import OptionsError, StyleOptions, resolve


def test_seed_preset_is_the_tutorial():
    o = resolve("seed")
    assert (o.width, o.height, o.iterations, o.evals_per_iteration) == (500, 300, 30, 20)
    assert (o.content_weight, o.style_weight, o.tv_weight, o.tv_power) == (0.025, 1.0, 1.0, 1.25)


@pytest.mark.parametrize(
    ("field", "value"),
    [("iterations", 0), ("tv_weight", float("nan")), ("style_layers", ["nope"]), ("size", 10**6)],
)
def test_bad_option_names_its_field(field, value):
    with pytest.raises(OptionsError) as err:
        resolve("default", **{field: value})
    assert err.value.field == field


def test_job_options_are_the_style_options_fields():
    """``JobOptions`` types the keyword options of the SDK's calls: exactly StyleOptions'
    fields, each with the field's type (a list option takes any sequence of its items)."""
    from collections.abc import Sequence

    from styleserve.options import JobOptions

    fields = typing.get_type_hints(StyleOptions)
    hints = typing.get_type_hints(JobOptions)
    assert set(hints) == set(fields)
    for name, hint in fields.items():
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            hint = Sequence[item]
        assert hints[name] == hint, name
