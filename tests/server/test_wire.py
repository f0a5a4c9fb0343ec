"""Requests are bounded by their wire encoding before protobuf parses them (``wire``): the
largest valid options fit the bound, bytes that are no request and requests with more fields
than any valid one are INVALID_ARGUMENT naming what is wrong."""

from __future__ import annotations

import dataclasses
import gc
import warnings

import grpc
import pytest
from styleserve.options import CEILINGS, LIMITS, OptionsError
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.wire import MAX_OPTIONS_BYTES, parse

from tests.server.service_helpers import connect, encoded, picture, request


def test_the_largest_valid_options_fit_the_bound():
    most = CEILINGS
    name = "n" * most.max_name_length
    options = pb.StyleOptions(
        preset=name,
        backbone=name,
        loss_normalization=name,
        scales=[0.5] * most.max_scales,
        content_layers=[name] * most.max_layers,
        style_layers=[name] * most.max_layers,
        style_layer_weights=[1e9] * most.max_layers,
        size=2**32 - 1,
        seed=2**64 - 1,
    )
    # With a third to spare.
    assert options.ByteSize() < MAX_OPTIONS_BYTES * 2 / 3


def test_a_valid_request_parses_as_it_is():
    job = request()
    assert parse(pb.StyleTransferRequest, job.SerializeToString(), LIMITS) == job


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"\xff\xff\xff", "request: is not a StyleTransferRequest"),
        (b"\x1a\x05abc", "request: is not a StyleTransferRequest (a field runs past"),
        (b"\x0b\x00", "request: is not a StyleTransferRequest (wire type 3"),
    ],
)
def test_bytes_that_are_no_request_are_refused(data: bytes, said: str):
    with pytest.raises(OptionsError) as info:
        parse(pb.StyleTransferRequest, data, LIMITS)
    assert str(info.value).startswith(said)


def test_a_nested_message_is_named_once_and_by_what_bounds_it():
    # A start of two bytes that are no VideoStart, and a start's job of a million fields.
    with pytest.raises(OptionsError) as broken:
        parse(pb.StylizeVideoRequest, b"\x0a\x02\xff\xff", LIMITS)
    assert str(broken.value).startswith("start: is not a VideoStart (")
    job = b"\xf8\x07\x01" * 1_000
    start = b"\x0a" + bytes([len(job) & 0x7F | 0x80, len(job) >> 7]) + job
    video = b"\x0a" + bytes([len(start) & 0x7F | 0x80, len(start) >> 7]) + start
    with pytest.raises(OptionsError) as flooded:
        parse(pb.StylizeVideoRequest, video, LIMITS)
    assert str(flooded.value) == (
        "start.job: has more fields than any valid StyleTransferRequest (at most 8 styles)"
    )
    # An upload holds no styles: its bound says nothing of them.
    with pytest.raises(OptionsError) as upload:
        parse(pb.UploadPictureRequest, b"\xf8\x07\x01" * 1_000, LIMITS)
    assert str(upload.value) == "request: has more fields than any valid UploadPictureRequest"


def test_more_fields_than_a_valid_request_are_refused_before_parsing():
    style = pb.StylePicture(image=pb.Image(data=encoded(picture((16, 16)))))
    job = request()  # one style picture, and as many again as allowed
    job.styles.extend([style] * LIMITS.max_styles)
    with pytest.raises(OptionsError, match="styles: send 1 to 8 style pictures, got 9"):
        parse(pb.StyleTransferRequest, job.SerializeToString(), LIMITS)
    # An unknown field repeated a million times: the walk stops at the most any request has.
    flood = job.SerializeToString() + b"\xf8\x07\x01" * 1_000_000
    with pytest.raises(OptionsError, match="more fields than any valid StyleTransferRequest"):
        parse(pb.StyleTransferRequest, flood, LIMITS)


def test_a_live_server_answers_garbage_with_invalid_argument(server):
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_stream(
            "/styleserve.v1.StyleTransferService/StyleTransfer", request_serializer=None
        )
        with pytest.raises(grpc.RpcError) as info:
            list(call(b"\xff\xff\xff", timeout=30))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request: is not a StyleTransferRequest")


def test_a_request_s_regions_are_bounded_before_parsing():
    job = request()
    job.regions.style_masks.add(data=encoded(picture((16, 16))))
    # A million colours, one varint field each: the walk stops at the most a Regions has.
    flood = b"\x18\x01" * 1_000_000
    data = job.SerializeToString() + b"\x42" + _varint_bytes(len(flood)) + flood
    with pytest.raises(
        OptionsError, match=r"regions: has more fields than any valid Regions \(at most 8 masks\)"
    ):
        parse(pb.StyleTransferRequest, data, LIMITS)
    packed = pb.StyleTransferRequest(regions=pb.Regions(style_colors=range(1000)))
    with pytest.raises(OptionsError, match=r"regions\.style_colors: takes \d+ bytes"):
        parse(pb.StyleTransferRequest, packed.SerializeToString(), LIMITS)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_a_streamed_call_refused_before_it_reads_leaves_nothing_unawaited(server):
    # A bad request id in the metadata refuses the call before its messages are read; gRPC's
    # reader of them, taken too early, used to warn when collected.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with connect(server.target) as stub:
            messages = iter([pb.UploadPictureRequest()])
            metadata = (("x-request-id", "two words"),)
            with pytest.raises(grpc.RpcError) as info:
                stub.UploadPicture(messages, metadata=metadata, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_a_picture_over_the_limit_is_told_the_limit_and_the_way_for_larger_ones():
    limits = dataclasses.replace(LIMITS, max_image_bytes=1000)
    big = pb.StyleTransferRequest(content=pb.Image(data=b"x" * 1200))
    with pytest.raises(OptionsError) as refusal:
        parse(pb.StyleTransferRequest, big.SerializeToString(), limits)
    assert refusal.value.field == "content"
    assert "more than a picture may in a request (1000, limits.max_image_bytes)" in str(
        refusal.value
    )
    assert "UploadPicture where the server takes uploads" in str(refusal.value)
