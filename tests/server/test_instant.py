"""The instant tier over a real loopback server: feed-forward jobs, the iteration-0 preview of
an optimisation, the feed-forward start, and servers without the tier.

Most tests run the tiny feed-forward pair the loader builds (``tiny-arbitrary``, the test
servers' default); one runs the real Magenta networks exported by ``styleserve-export``.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_export.artifact import ArtifactError

from tests.fixtures_server import SERVING, health
from tests.server.service_helpers import connect, encoded, kinds, picture, request, rpc_error

INSTANT = {"preset": "instant", "size": 70}


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_an_instant_job_streams_started_then_its_result(server):
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(**INSTANT), timeout=60))
    assert kinds(responses) == ["queued", "started", "result"]
    assert responses[1].started.total_iterations == 0
    result = responses[-1].result
    # 48x32 content at size 70: the aspect ratio kept, though 47 is no multiple of the
    # network's 4 (the picture is padded for it and cropped back).
    assert decoded(result.image.data).size == (result.width, result.height) == (70, 47)
    assert result.iterations == 0
    assert result.effective_options.method == pb.METHOD_FEED_FORWARD
    receipt = result.receipt
    assert receipt.feed_forward.name == "tiny-arbitrary"
    assert receipt.feed_forward.execution_provider == "CPUExecutionProvider"
    assert len(receipt.feed_forward.sha256) == 64
    # No VGG weights took part in it.
    assert receipt.backbone == "" and receipt.weights_sha256 == ""


def test_server_info_names_the_instant_tier_and_its_preset(server):
    with connect(server.target) as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.feed_forward.name == "tiny-arbitrary"
    assert info.feed_forward.execution_provider == "CPUExecutionProvider"
    presets = {p.name: p.options for p in info.presets}
    assert presets["instant"].method == pb.METHOD_FEED_FORWARD
    assert presets["default"].method == pb.METHOD_OPTIMIZATION


def test_style_strength_zero_keeps_the_content_s_own_style(server):
    """At strength 0 the style vector is the content's own, so the style picture no longer
    matters; at strength 1 it does."""
    first, second = encoded(picture((40, 40)), "PNG"), encoded(picture((64, 16)), "PNG")

    def pixels(style: bytes, strength: float) -> np.ndarray:
        with connect(server.target) as stub:
            responses = list(
                stub.StyleTransfer(
                    request(styles=[style], style_strength=strength, **INSTANT), timeout=60
                )
            )
        return np.asarray(decoded(responses[-1].result.image.data), dtype=np.int16)

    assert np.array_equal(pixels(first, 0.0), pixels(second, 0.0))
    assert np.abs(pixels(first, 1.0) - pixels(second, 1.0)).max() > 0
    # And the same request twice gives the same pixels: nothing here is random.
    assert np.array_equal(pixels(first, 1.0), pixels(first, 1.0))


def test_preserve_color_keeps_the_content_s_chroma(server):
    content = picture((64, 48))
    want = np.asarray(content.convert("YCbCr"), dtype=np.int16)[..., 1:]

    def chroma_error(preserve: bool) -> float:
        with connect(server.target) as stub:
            responses = list(
                stub.StyleTransfer(
                    request(encoded(content), preserve_color=preserve, preset="instant", size=64),
                    timeout=60,
                )
            )
        result = decoded(responses[-1].result.image.data).convert("YCbCr")
        return float(np.abs(np.asarray(result, dtype=np.int16)[..., 1:] - want).mean())

    # Not exactly the content's: a new luminance under saturated colours leaves the RGB gamut,
    # and the clipping shifts the chroma back.
    assert chroma_error(True) < 5 < 3 * chroma_error(True) < chroma_error(False)


def test_an_optimisation_shows_the_feed_forward_picture_first(server):
    delivery = pb.DeliveryOptions(preview_every=2, preview_size=24)
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(iterations=4, delivery=delivery), timeout=60))
    events = kinds(responses)
    # Started (with the plan's total) comes before the picture, the picture before iteration 1.
    assert events[:3] == ["queued", "started", "preview"]
    assert responses[2].preview.iteration == 0
    assert max(decoded(responses[2].preview.image.data).size) == 24
    progress = [r.progress for r in responses if r.HasField("progress")]
    assert len(progress) == responses[1].started.total_iterations
    # Without previews there is no feed-forward picture to send.
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(iterations=2), timeout=60))
    assert "preview" not in kinds(responses)


def test_an_optimisation_can_start_from_the_feed_forward_picture(server):
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(init=pb.INIT_FEED_FORWARD), timeout=60))
    result = responses[-1].result
    assert result.effective_options.init == pb.INIT_FEED_FORWARD
    assert result.receipt.feed_forward.name == "tiny-arbitrary"
    assert result.receipt.backbone == "tiny-vgg16" and result.iterations > 0
    # A plain content start names no feed-forward networks.
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(), timeout=60))
    assert not responses[-1].result.receipt.HasField("feed_forward")


def test_instant_jobs_do_not_wait_behind_an_optimisation(start_server):
    with start_server(job_slots=1, queue_size=0) as srv, connect(srv.target) as stub:
        long_job = stub.StyleTransfer(request(size=48, iterations=5000), timeout=120)
        started = threading.Event()

        def watch() -> None:
            with contextlib.suppress(grpc.RpcError):  # the test cancels it at the end
                for response in long_job:
                    if response.HasField("progress"):
                        started.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            assert started.wait(60)
            begin = time.monotonic()
            responses = list(stub.StyleTransfer(request(**INSTANT), timeout=60))
            assert kinds(responses)[-1] == "result"
            assert time.monotonic() - begin < 10
            # The optimisation still holds its only slot, untouched.
            assert watcher.is_alive()
        finally:
            long_job.cancel()
            watcher.join(30)


def test_bad_instant_requests_are_refused_like_any_other(server):
    with connect(server.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(b"not a picture", **INSTANT), timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("content:")
        error = rpc_error(stub.StyleTransfer(request(preset="instant", size=99999), timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("options.size:")
        error = rpc_error(stub.StyleTransfer(request(style_strength=1.5, **INSTANT), timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("options.style_strength:")
    assert health(server.target) == SERVING


def test_a_server_without_the_tier_says_so(start_server):
    with start_server(feed_forward="none") as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(**INSTANT), timeout=30))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details().startswith("options.method:")
        assert "--feed-forward" in error.details()
        error = rpc_error(stub.StyleTransfer(request(init=pb.INIT_FEED_FORWARD), timeout=30))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details().startswith("options.init:")
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert not info.HasField("feed_forward")
        # Optimisations with previews run as before, without an iteration-0 picture.
        delivery = pb.DeliveryOptions(preview_every=1)
        responses = list(stub.StyleTransfer(request(delivery=delivery), timeout=60))
        previews = [r.preview.iteration for r in responses if r.HasField("preview")]
        assert previews and 0 not in previews
        assert health(srv.target) == SERVING


def test_a_missing_artifact_stops_the_start_with_the_command_to_run(start_server, tmp_path: Path):
    with pytest.raises(ArtifactError, match="styleserve-export --source magenta-arbitrary"):
        with start_server(feed_forward="magenta-arbitrary", cache_dir=tmp_path):
            pass


def test_the_real_magenta_networks_stylise_through_the_server(
    start_server, feed_forward_cache: Path
):
    with start_server(feed_forward="magenta-arbitrary", cache_dir=feed_forward_cache) as srv:
        content = picture((96, 64))
        with connect(srv.target) as stub:
            responses = list(
                stub.StyleTransfer(request(encoded(content), preset="instant", size=96), timeout=60)
            )
    result = responses[-1].result
    assert result.receipt.feed_forward.name == "magenta-arbitrary"
    image = np.asarray(decoded(result.image.data), dtype=np.int16)
    assert image.shape == (64, 96, 3)
    # Stylised: neither the content nor a flat picture.
    assert np.abs(image - np.asarray(content, dtype=np.int16)).mean() > 10
    assert image.std() > 5
