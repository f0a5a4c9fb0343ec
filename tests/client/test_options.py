"""The shared options module resolves presets and names the bad field."""

import typing

import numpy as np
import pytest
from styleserve.options import OptionsError, StyleOptions, resolve, resolve_given
from styleserve.plan import output_size


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


def test_resolve_given_resolves_once_and_records_what_the_caller_chose():
    resolved = resolve_given({"preset": "seed", "iterations": 7, "seed": None}, init_image=True)
    assert resolved.options == resolve("seed", iterations=7, init="image")
    # None is "the preset's": not given. A starting picture makes init "image", as if given.
    assert resolved.given == {"preset", "iterations", "init"}
    assert resolve_given({"init": "noise"}, init_image=True).options.init == "noise"


def test_resolve_given_refuses_an_unknown_name_and_leaves_limits_to_the_server():
    with pytest.raises(OptionsError) as err:
        resolve_given({"itterations": 5})
    assert err.value.field == "itterations" and err.value.message == "unknown option"
    assert resolve_given({"size": 10**6}).options.size == 10**6


def test_a_size_asked_for_alone_replaces_a_presets_frame():
    framed = resolve("seed")
    assert (framed.width, framed.height) == (500, 300)
    sized = resolve("seed", size=64)
    assert (sized.size, sized.width, sized.height) == (64, 0, 0)
    assert output_size((40, 20), sized) == (64, 32)
    both = resolve("seed", size=64, width=100, height=50)
    assert (both.width, both.height) == (100, 50)


def test_a_string_for_a_list_option_is_refused_not_read_letter_by_letter():
    with pytest.raises(OptionsError, match="^style_layers: give a list, got the string"):
        resolve(style_layers="block1_conv1")
    assert resolve(style_layers=["block1_conv1"]).style_layers == ("block1_conv1",)


def test_numpys_numbers_are_taken_as_the_python_numbers_they_stand_for():
    # As a sweep made with numpy gives them: each becomes the option's own kind.
    given = {
        "size": np.int64(64),
        "seed": np.uint32(7),
        "content_weight": np.float32(0.5),
        "scales": np.array([0.5, 1.0]),
    }
    options = resolve_given(given).options
    assert (options.size, options.seed, options.content_weight, options.scales) == (
        64,
        7,
        0.5,
        (0.5, 1.0),
    )
    assert [type(v) for v in (options.size, options.seed, options.content_weight)] == [
        int,
        int,
        float,
    ]
    assert type(options.scales[0]) is float
    # A number of the wrong kind is still refused, naming the option.
    for name, value in (("size", np.float64(64)), ("size", True), ("iterations", 2.0)):
        with pytest.raises(OptionsError, match=f"^{name}: must be an integer"):
            resolve_given({name: value})


@pytest.mark.parametrize("sides", [{"size": 16384}, {"width": 16384, "height": 100}])
def test_a_webp_picture_over_its_formats_side_is_refused_before_any_work(sides):
    # A server may allow 16384 px; WebP holds 16383, and the job's encoding failed at its end.
    with pytest.raises(OptionsError, match=r"at most 16383 px a side.*png or jpeg") as refusal:
        resolve(output_format="webp", limits=None, **sides)
    assert refusal.value.field == "output_format"
    assert resolve(output_format="png", limits=None, **sides).output_format == "png"
    assert resolve(output_format="webp", size=16383, limits=None).size == 16383


def test_layers_of_a_backbone_the_server_may_serve_are_its_to_judge():
    # No backbone named: the server fills in its own, perhaps VGG19 with its conv4 layers.
    resolved = resolve_given({"style_layers": ["block5_conv4"]})
    assert resolved.options.style_layers == ("block5_conv4",)
    assert "backbone" not in resolved.given
    with pytest.raises(OptionsError, match="is not a layer of keras-vgg16"):
        resolve_given({"style_layers": ["block5_conv4"], "backbone": "keras-vgg16"})
    with pytest.raises(OptionsError, match="is not a layer of"):
        resolve_given({"style_layers": ["block9_conv1"]})
