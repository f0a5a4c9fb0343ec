"""Requests carry the options the client resolved, but for those a server decides; bad options
fail before any call."""

import pytest
from PIL import Image
from styleserve import AsyncClient, Client, InvalidArgument, OptionsError, Unavailable
from styleserve.convert import from_proto
from styleserve.options import PRESETS, STYLE_FIELDS, resolve
from styleserve.request import build_registration, build_request, with_pictures

from tests.client.client_helpers import png
from tests.fixtures_server import free_port

# What a server decides where a request leaves it: the backbone it serves, its delivery defaults.
SERVER_DECIDES = {"backbone", "preview_size", "output_quality"}


def sent(request):
    """``(preset, options)`` as a server reads ``request``."""
    blend = [s.blend_weight for s in request.styles]
    return from_proto(request.options, request.delivery, blend)


def test_the_request_carries_the_resolved_options_but_what_the_server_decides():
    request = build_request(png(), png(), init_image=None, request_id=None, options={})
    preset, overrides = sent(request)
    assert preset == "default"
    assert resolve(preset, **overrides) == PRESETS["default"]
    assert request.options.HasField("iterations")
    # Unset, so that the server fills in the backbone it serves and its own delivery defaults.
    assert not SERVER_DECIDES & set(overrides)
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
            "output_quality": 70,
            "size": None,
        },
    )
    preset, overrides = sent(request)
    assert preset == "seed"
    expected = PRESETS["seed"].replace(
        iterations=7,
        content_weight=0.5,
        init="image",
        style_blend=(1.0, 3.0),
        preview_every=2,
        output_format="webp",
        output_quality=70,
    )
    assert resolve(preset, preview_size=expected.preview_size, **overrides) == expected
    assert overrides["output_quality"] == 70 and "preview_size" not in overrides
    assert request.request_id == "abc"
    assert request.init_image.data.startswith(b"\x89PNG")


def test_a_job_on_a_registered_style_leaves_the_style_options_to_it():
    registration = build_registration(png(), {"style_scale": 2.0})
    request = build_request(
        png(), None, init_image=None, request_id=None, options={}, style_id="sty_" + "0" * 64
    )
    _, overrides = sent(request)
    assert not set(STYLE_FIELDS) & set(overrides)
    # Sent with the style's pictures instead, the job carries the style's options.
    preset, direct = sent(with_pictures(request, registration))
    assert "backbone" not in direct
    job = resolve(preset, **direct)
    for name in STYLE_FIELDS:
        assert getattr(job, name) == getattr(registration.resolved.options, name), name
    assert job.style_scale == 2.0


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


def _info_calls(server) -> float:
    registry = server.server.metrics.registry
    labels = {"method": "GetServerInfo", "code": "OK"}
    return registry.get_sample_value("styleserve_requests_total", labels) or 0.0


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "60"])
def test_a_timeout_that_is_no_deadline_is_refused_before_any_call(server, timeout):
    with pytest.raises(OptionsError, match=r"^timeout: must be seconds above 0"):
        Client(server.target, timeout=timeout)
    before = _info_calls(server)
    with Client(server.target) as client:
        with pytest.raises(OptionsError, match=r"^timeout: must be seconds above 0"):
            client.info(timeout=timeout)
        # Nothing was sent: the server counts only this call.
        assert client.info(timeout=30).version
    assert _info_calls(server) == before + 1


@pytest.mark.parametrize("target", [50051, "", "  ", None])
def test_a_target_that_is_no_address_is_refused_naming_it(target):
    for client_type in (Client, AsyncClient):
        with pytest.raises(OptionsError, match=r"^target: give the server's address"):
            client_type(target)


def test_a_closed_client_refuses_every_call_before_touching_its_channel(server):
    # grpcio crashed the whole process making the health stub on a closed channel.
    client = Client(server.target)
    client.close()
    for call in (client.health, client.info, lambda: client.get_job("x" * 8)):
        with pytest.raises(ValueError, match="this client is closed"):
            call()


async def test_a_closed_async_client_refuses_every_call(server):
    client = AsyncClient(server.target)
    await client.close()
    with pytest.raises(ValueError, match="this client is closed"):
        await client.health()
    with pytest.raises(ValueError, match="this client is closed"):
        await client.info()


def test_a_token_read_with_its_newline_still_opens_the_server(start_server):
    with start_server(auth_token="s3cret") as srv:
        with Client(srv.target, token="s3cret\n", timeout=30) as client:
            assert client.info().version
    with pytest.raises(OptionsError, match="^token: may hold printable ASCII only"):
        Client(srv.target, token="s3c\x00ret")


@pytest.mark.parametrize("client", [Client, AsyncClient])
def test_a_receive_limit_below_a_results_least_message_is_refused_at_once(client):
    # A server sends results in messages of at least 64 KiB: every job would be refused.
    small = [("grpc.max_receive_message_length", 30000)]
    with pytest.raises(OptionsError, match=r"^channel_options: .* is 30000: .* at least 65536"):
        client("127.0.0.1:1", channel_options=small)
