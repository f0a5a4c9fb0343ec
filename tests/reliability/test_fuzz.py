"""Hostile requests through the live RPC: whatever a caller sends, the answer is OK,
INVALID_ARGUMENT or RESOURCE_EXHAUSTED (never INTERNAL), it comes within 2 s, its message
names no server path and carries no traceback, and the server is SERVING afterwards.

Hypothesis draws plausible requests with up to two hostile parts: pictures (sizes down to one
pixel, elongated shapes, every mode and format, cut-off bytes), option values (every field,
across magnitudes: zero, negative, huge, NaN, unknown enum numbers) and request ids. The
server's limits are small so that every accepted job is quick on the tiny network; the count
of examples and each one's time are bounded.
"""

from __future__ import annotations

import io
import time
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from styleserve.options import VGG_LAYERS
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

from tests.fixtures_server import SERVING, health, serve_in_thread

pytestmark = pytest.mark.timeout(600)

# Small enough that any job the server accepts ends in well under the 2 s an answer may take.
LIMITS = {
    "max_output_side": 48,
    "max_iterations": 3,
    "max_evals_per_iteration": 2,
    "max_preview_size": 48,
    "preview_size": 32,
    "max_styles": 3,
    "max_input_pixels": 200_000,
    "max_image_bytes": 256 * 1024,
    "max_request_bytes": 1024 * 1024,
    "queue_size": 0,
}
ANSWER_SECONDS = 2.0
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# What would give a server's insides away.
LEAKS = ("Traceback", 'File "', "/styleserve_server/", "site-packages", ".py:")


@pytest.fixture(scope="module")
def fuzz_server():
    with serve_in_thread(**LIMITS) as srv:
        channel = grpc.insecure_channel(srv.target)
        stub = pb_grpc.StyleTransferServiceStub(channel)
        _warm_up(stub)
        yield srv, stub
        channel.close()


def _warm_up(stub: pb_grpc.StyleTransferServiceStub) -> None:
    """One plain job of each tier, so that the process's one-time costs (the first pass of
    each network picks its kernels) are not charged to whichever drawn request comes first:
    on a loaded machine they alone passed the 2 s."""
    picture = _encode(Image.new("RGB", (32, 32), (90, 120, 150)), "PNG")
    for preset in ("", "instant"):
        message = pb.StyleTransferRequest(
            content=pb.Image(data=picture),
            styles=[pb.StylePicture(image=pb.Image(data=picture))],
            options=pb.StyleOptions(preset=preset, size=32, iterations=1),
        )
        events = list(stub.StyleTransfer(message, timeout=120))
        assert events[-1].WhichOneof("event") == "result", preset or "default"


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def pictures(draw: st.DrawFn, hostile: bool = False) -> bytes:
    side = st.integers(1, 400) if hostile else st.integers(16, 96)
    width, height = draw(side), draw(side)
    modes = ["RGB", "L", "RGBA", "P", "CMYK", "I;16", "1"] if hostile else ["RGB"]
    mode = draw(st.sampled_from(modes))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "WEBP", "GIF"] if hostile else ["PNG", "JPEG"]))
    image = Image.new("RGB", (width, height), draw(st.tuples(*[st.integers(0, 255)] * 3)))
    try:
        data = _encode(image.convert(mode), fmt)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        data = _encode(image, "PNG")
    cut = draw(st.one_of(st.none(), st.integers(0, len(data)))) if hostile else None
    return data if cut is None else data[:cut]


_SANE = {
    float: st.sampled_from([0.0, 1e-3, 0.25, 0.5, 1.0, 2.0, 10.0]),
    int: st.integers(0, 4),
}
# Sane values of the fields whose range is narrower than their type's.
_SANE_FIELDS = {
    "backbone": st.just("tiny-vgg16"),
    "loss_normalization": st.sampled_from(["tutorial", "size_independent"]),
    "learning_rate": st.sampled_from([0.1, 1.0, 4.0]),
    "tv_power": st.sampled_from([1.0, 1.25, 2.0]),
    "style_scale": st.sampled_from([0.25, 1.0, 2.0]),
    "style_strength": st.sampled_from([0.0, 0.5, 1.0]),
    "style_layer_weights": st.just([]),
    "scales": st.sampled_from([[1.0], [0.5, 1.0], [0.25, 0.5, 1.0]]),
    "size": st.integers(16, 48),
    "iterations": st.integers(1, 3),
    "evals_per_iteration": st.integers(1, 2),
}
# Set together or not at all.
_SIZE_PAIRS = st.sampled_from([(16, 16), (40, 24), (48, 48)])
_HOSTILE = {
    float: st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.sampled_from([0.0, -0.0, 1e-30, 1e30, 3.4e38, -1.0, 1e8]),
    ),
    int: st.sampled_from([0, 1, 7, 65, 2**31 - 1, 2**32 - 1]),
}
_SANE_LAYERS = st.lists(st.sampled_from(VGG_LAYERS["vgg16"]), min_size=1, max_size=4)
_HOSTILE_LAYERS = st.lists(
    st.one_of(st.sampled_from(VGG_LAYERS["vgg19"]), st.text(max_size=12)), max_size=4
)
_OPTION_FIELDS = [f.name for f in pb.StyleOptions.DESCRIPTOR.fields if f.name != "preset"]


def _enum(field: Any, hostile: bool) -> st.SearchStrategy[int]:
    if hostile:
        return st.integers(0, 9)
    return st.sampled_from([v.number for v in field.enum_type.values])


def _value(field: Any, hostile: bool) -> st.SearchStrategy[Any]:
    """What a field of StyleOptions gets: a value a real caller would send, or a hostile one."""
    if not hostile and field.name in _SANE_FIELDS:
        return _SANE_FIELDS[field.name]
    pool = _HOSTILE if hostile else _SANE
    if field.is_repeated:
        if field.type == field.TYPE_STRING:
            return _HOSTILE_LAYERS if hostile else _SANE_LAYERS
        return st.lists(pool[float], max_size=6)
    if field.enum_type is not None:
        return _enum(field, hostile)
    if field.type == field.TYPE_FLOAT:
        return pool[float]
    if field.type == field.TYPE_BOOL:
        return st.booleans()
    if field.type == field.TYPE_STRING:
        return st.text(max_size=20)
    if field.name == "seed":
        return st.integers(0, 2**64 - 1)
    return pool[int]


@st.composite
def style_options(draw: st.DrawFn, hostile: frozenset[str]) -> pb.StyleOptions:
    preset = st.text(max_size=8) if "preset" in hostile else st.sampled_from(["", "instant"])
    message = pb.StyleOptions(preset=draw(preset))
    if not hostile & {"width", "height"} and draw(st.booleans()):
        message.width, message.height = draw(_SIZE_PAIRS)
    for field in pb.StyleOptions.DESCRIPTOR.fields:
        bad = field.name in hostile
        if field.name in ("width", "height") and not bad:
            continue
        # Sizes and counts are always set: the presets' own would pass the small limits.
        chosen = bad or field.name in ("size", "iterations") or draw(st.booleans())
        if field.name == "preset" or field.name == "time_budget_seconds" or not chosen:
            continue  # the time budget keeps a job running: another test's business
        value = draw(_value(field, bad))
        if field.is_repeated:
            getattr(message, field.name).extend(value)
        else:
            setattr(message, field.name, value)
    return message


@st.composite
def requests(draw: st.DrawFn) -> pb.StyleTransferRequest:
    """A plausible request with up to two hostile parts (fields, pictures or the request id),
    so that enough of them pass the checks to reach the engine, where subtler failures live."""
    parts = [*_OPTION_FIELDS, "preset", "content", "styles", "init_image", "request_id"]
    hostile = frozenset(draw(st.sets(st.sampled_from(parts), max_size=2)))
    style = st.tuples(pictures("styles" in hostile), _value_floats("styles" in hostile))
    count = (0, 4) if "styles" in hostile else (1, 2)
    styles = draw(st.lists(style, min_size=count[0], max_size=count[1]))
    with_init = "init_image" in hostile or draw(st.booleans())
    return pb.StyleTransferRequest(
        content=pb.Image(data=draw(pictures("content" in hostile))),
        styles=[pb.StylePicture(image=pb.Image(data=s), blend_weight=w) for s, w in styles],
        options=draw(style_options(hostile)),
        delivery=pb.DeliveryOptions(
            preview_every=draw(st.integers(0, 2)),
            preview_size=draw(st.sampled_from([0, 16, 32])),
            output_format=draw(st.integers(0, 3)),
            output_quality=draw(st.integers(0, 100)),
        ),
        init_image=pb.Image(data=draw(pictures("init_image" in hostile))) if with_init else None,
        request_id=draw(st.text(max_size=40) if "request_id" in hostile else st.just("")),
    )


def _value_floats(hostile: bool) -> st.SearchStrategy[float]:
    return _HOSTILE[float] if hostile else st.sampled_from([0.0, 0.5, 1.0, 3.0])


def _answer(stub: pb_grpc.StyleTransferServiceStub, message: pb.StyleTransferRequest) -> tuple:
    began = time.monotonic()
    try:
        kinds = [r.WhichOneof("event") for r in stub.StyleTransfer(message, timeout=30)]
        code, details = grpc.StatusCode.OK, ""
        assert kinds[-1] == "result", kinds
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    return code, details, time.monotonic() - began


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(message=requests())
def test_no_request_ends_in_internal(fuzz_server: tuple[Any, Any], message) -> None:
    srv, stub = fuzz_server
    code, details, seconds = _answer(stub, message)
    assert code in ALLOWED, f"{code.name}: {details}"
    assert seconds < ANSWER_SECONDS, f"{code.name} after {seconds:.2f} s: {details}"
    assert not any(leak in details for leak in LEAKS), details


def test_the_server_is_serving_after_the_fuzzing(fuzz_server) -> None:
    srv, _ = fuzz_server
    assert health(srv.target) == SERVING
