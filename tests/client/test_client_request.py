"""Requests carry exactly the options the caller set; bad options fail before any call."""

import pytest
from client_helpers import png
from fixtures_server import free_port
from PIL import Image
from styleserve import Client, InvalidArgument, Unavailable
from styleserve.convert import from_proto
from styleserve.request import build_request


def test_unset_options_are_not_sent_so_the_server_applies_the_preset():
    request = build_request(png(), png(), init_image=None, request_id=None, options={})
    preset, overrides = from_proto(request.options, request.delivery, [0.0])
    assert preset == "default"
    assert overrides == {}
    assert not request.options.HasField("iterations")
    assert not request.HasField("init_image")


def test_set_options_travel_in_their_messages():
    request = build_request(
        png(),
        [png(color=(1, 1, 1)), png(color=(2, 2, 2))],
        init_image=Image.new("RGB", (16, 16)),
        request_id="abc",
        options={
            "preset": "seed",
            "iterations": 7,
            "content_weight": 0.5,
            "style_blend": [1.0, 3.0],
            "preview_every": 2,
            "output_format": "webp",
            "size": None,
        },
    )
    preset, overrides = from_proto(
        request.options, request.delivery, [s.blend_weight for s in request.styles]
    )
    assert preset == "seed"
    assert overrides == {
        "iterations": 7,
        "content_weight": 0.5,
        "init": "image",
        "style_blend": [1.0, 3.0],
        "preview_every": 2,
        "output_format": "webp",
    }
    assert request.request_id == "abc"
    assert request.init_image.data.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"iterations": 0}, "iterations"),
        ({"tv_weight": float("nan")}, "tv_weight"),
        ({"itterations": 5}, "itterations"),
        ({"preset": "fast"}, "preset"),
        ({"style_blend": [1.0, 2.0]}, "style_blend"),
        ({"output_format": "gif"}, "output_format"),
    ],
)
def test_bad_options_fail_locally_naming_the_field(options, field):
    # A dead address: the error must come from the client's own check, before any call.
    with Client(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidArgument, match=rf"^INVALID_ARGUMENT: {field}:"):
            client.stylize(png(), png(), **options)


def test_no_server_is_unavailable():
    with Client(f"127.0.0.1:{free_port()}", timeout=10) as client:
        with pytest.raises(Unavailable) as err:
            client.stylize(png(), png(), iterations=1)
        with pytest.raises(Unavailable):
            client.info()
    assert err.value.code.name == "UNAVAILABLE"
    assert err.value.details


def test_no_styles_is_refused():
    with pytest.raises(InvalidArgument, match="at least one style"):
        build_request(png(), [], init_image=None, request_id=None, options={})
