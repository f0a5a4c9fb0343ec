"""A job's whole stream over a real loopback server: queued, started, progress, previews, result."""

from __future__ import annotations

import io
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image
from styleserve.convert import effective_options
from styleserve.options import PRESETS
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import FAST, connect, encoded, kinds, picture, request


def test_a_full_stream_runs_from_queued_to_result(server):
    with connect(server.target) as stub:
        call = stub.StyleTransfer(
            request(iterations=4, delivery=pb.DeliveryOptions(preview_every=2, preview_size=24)),
            timeout=120,
        )
        responses = list(call)
        metadata = dict(call.initial_metadata())
    events = kinds(responses)
    assert events[0] == "queued" and responses[0].queued.position == 0
    assert events[1] == "started"
    assert events[-1] == "result"
    started = responses[1].started
    assert started.device == "cpu"
    progress = [r.progress for r in responses if r.HasField("progress")]
    assert [p.iteration for p in progress] == list(range(1, started.total_iterations + 1))
    assert all(p.total_iterations == started.total_iterations for p in progress)
    assert progress[-1].eta_seconds == 0
    previews = [r.preview for r in responses if r.HasField("preview")]
    shown = [p.iteration for p in previews]
    # A preview still waiting when a newer one comes is replaced by it; the last always comes.
    assert shown == sorted(set(shown)) and shown[-1] == started.total_iterations
    # Every preview_every-th iteration, and the last one whatever its number.
    assert all(i % 2 == 0 for i in shown[:-1])
    assert max(Image.open(io.BytesIO(previews[0].image.data)).size) == 24

    result = responses[-1].result
    image = Image.open(io.BytesIO(result.image.data))
    assert image.format == "PNG"
    # The 48x32 content at size 32 keeps its aspect ratio.
    assert image.size == (result.width, result.height) == (32, 21)
    assert result.iterations == started.total_iterations
    assert result.losses.total == pytest.approx(
        result.losses.content + result.losses.style + result.losses.tv
    )
    assert result.timings.total_seconds >= result.timings.optimize_seconds > 0
    receipt = result.receipt
    assert receipt.backbone == "tiny-vgg16" and receipt.device == "cpu"
    assert receipt.precision == "float32" and receipt.torch_version
    assert receipt.request_id == metadata["x-request-id"]
    effective = effective_options(result.effective_options)
    assert effective.seed == receipt.seed
    assert (effective.size, effective.iterations, effective.precision) == (32, 4, "float32")


def test_the_same_seed_reproduces_the_result(server):
    with connect(server.target) as stub:
        first, second = (
            list(stub.StyleTransfer(request(seed=7, init=pb.INIT_NOISE), timeout=120))[-1].result
            for _ in range(2)
        )
    assert first.receipt.seed == second.receipt.seed == 7
    assert first.image.data == second.image.data


@pytest.mark.parametrize(
    ("output_format", "pil_format"),
    [(pb.OUTPUT_FORMAT_JPEG, "JPEG"), (pb.OUTPUT_FORMAT_WEBP, "WEBP")],
)
def test_the_result_comes_in_the_requested_format(server, output_format, pil_format):
    delivery = pb.DeliveryOptions(output_format=output_format, output_quality=50)
    with connect(server.target) as stub:
        result = list(stub.StyleTransfer(request(delivery=delivery), timeout=120))[-1].result
    assert Image.open(io.BytesIO(result.image.data)).format == pil_format
    assert result.effective_options.HasField("iterations")


def test_the_callers_request_id_is_echoed(server):
    with connect(server.target) as stub:
        message = request()
        message.request_id = "caller-chosen-42"
        result = list(stub.StyleTransfer(message, timeout=120))[-1].result
    assert result.receipt.request_id == "caller-chosen-42"


def test_a_real_photograph_in_a_real_painting_style(server):
    """The sample pictures, downscaled, through the whole service."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    content, style = (
        encoded(Image.open(examples / name).reduce(8), "JPEG")
        for name in ("tubingen.jpg", "starry_night.jpg")
    )
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(content, [style], size=48), timeout=120))
    result = responses[-1].result
    assert max(result.width, result.height) == 48


def test_server_info_describes_limits_presets_and_defaults(start_server):
    with start_server(job_slots=2, queue_size=3, max_iterations=100) as srv:
        with connect(srv.target) as stub:
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
    assert info.backbones == ["tiny-vgg16"] and info.device == "cpu"
    limits = info.limits
    assert (limits.job_slots, limits.queue_size, limits.max_iterations) == (2, 3, 100)
    assert {p.name for p in info.presets} == set(PRESETS)
    seed = next(p for p in info.presets if p.name == "seed")
    assert (seed.options.width, seed.options.height, seed.options.iterations) == (500, 300, 30)
    assert info.default_delivery.preview_size == srv.settings.preview_size
    assert info.version and info.torch_version


def test_several_styles_blend(server):
    styles = [encoded(picture((40, 40), "L"), "PNG"), encoded(picture((24, 40)), "WEBP")]
    message = request(styles=styles)
    message.styles[0].blend_weight = 3
    message.styles[1].blend_weight = 1
    with connect(server.target) as stub:
        result = list(stub.StyleTransfer(message, timeout=120))[-1].result
    assert result.width == FAST["size"]


def test_reflection_lists_the_services(server):
    with grpc.insecure_channel(server.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert set(services) >= {
        "styleserve.v1.StyleTransferService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_the_reported_set_up_includes_decoding_the_pictures(server):
    # A 6-megapixel content picture takes far longer to decode than the tiny network's set-up
    # at 32 px: Timings.setup_seconds ("decoding and preparing inputs") must cover it.
    gradient = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    content = encoded(gradient)
    decode_seconds = min(_decode_seconds(content) for _ in range(3))
    with connect(server.target) as stub:
        result = list(stub.StyleTransfer(request(content, iterations=1), timeout=120))[-1].result
    timings = result.timings
    assert timings.setup_seconds >= 0.8 * decode_seconds, (timings, decode_seconds)
    assert timings.total_seconds == pytest.approx(
        timings.queue_seconds + timings.setup_seconds + timings.optimize_seconds
    )


def _decode_seconds(data: bytes) -> float:
    started = time.perf_counter()
    Image.open(io.BytesIO(data)).convert("RGB")
    return time.perf_counter() - started
