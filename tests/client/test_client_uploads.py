"""Pictures larger than a message through the SDK and the CLI: a 50 MB content picture goes by
upload and a result of more than 4 MB comes back in chunks, digest-checked, with no call or
flag of the caller's; a cut-off upload, a wrong digest or a damaged result is a clear error and
nothing is stored.

The 50 MB jobs are instant-tier ones at 1600 px (their picture is the same whatever the tier,
and a second or two on the tiny networks); a client whose channel takes no message over 4 MiB
proves that the result came in chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve import (
    AsyncClient,
    Client,
    DataLoss,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    Regions,
    ResourceExhausted,
    UploadedPicture,
)
from styleserve.errors import from_rpc_error
from styleserve.uploads import upload_requests
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

from tests.client.client_helpers import cli_command
from tests.fixtures_server import RunningServer, serve_in_thread
from tests.server.service_helpers import sample

pytestmark = pytest.mark.timeout(300)

MiB = 2**20
# gRPC's default receive limit: a result larger than this cannot come in one message.
FOUR_MIB = [("grpc.max_receive_message_length", 4 * MiB)]
# An instant job whose PNG of a noisy picture is some 5.8 MB.
BIG_JOB: dict[str, Any] = {"preset": "instant", "size": 1600, "resize": "nearest"}


def noise_png(size: tuple[int, int], path: Path, level: int = 1) -> Path:
    pixels = np.random.default_rng(size[0]).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path, "PNG", compress_level=level)
    return path


@pytest.fixture(scope="module")
def big_content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50 MB PNG: 4100 x 4100 pixels of noise, stored uncompressed."""
    path = noise_png((4100, 4100), tmp_path_factory.mktemp("big") / "big.png", level=0)
    assert path.stat().st_size >= 50e6
    return path


@pytest.fixture(scope="module")
def big_server() -> Iterator[RunningServer]:
    with serve_in_thread() as srv:
        yield srv


def uploaded_bytes(srv: RunningServer) -> float:
    return sample(srv, "styleserve_upload_store_bytes")


def test_a_50_mb_picture_uploads_and_a_result_over_4_mb_comes_back_checked(
    big_server, big_content, style
):
    with Client(big_server.target, channel_options=FOUR_MIB) as client:
        assert client.info().limits.max_request_bytes < big_content.stat().st_size
        result = client.stylize(big_content, style, **BIG_JOB)
        info = client.info()
    assert len(result.data) > 4 * MiB
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    assert (result.width, result.height) == (1600, 1600)
    assert Image.open(io.BytesIO(result.data)).size == (1600, 1600)
    assert info.uploads is not None
    assert info.uploads.used_bytes == big_content.stat().st_size
    ok = {"method": "UploadPicture", "code": "OK"}
    assert sample(big_server, "styleserve_requests_total", **ok) >= 1


def test_the_cli_sends_a_50_mb_picture_and_writes_a_result_over_4_mb(
    big_server, big_content, style, tmp_path
):
    out = tmp_path / "out.png"
    done = subprocess.run(
        cli_command(
            "stylize",
            str(big_content),
            str(style),
            "-o",
            str(out),
            "--preset",
            "instant",
            "--size",
            "1600",
            "--resize",
            "nearest",
            "--json",
            "--server",
            big_server.target,
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    data = out.read_bytes()
    assert len(data) > 4 * MiB
    assert described["sha256"] == hashlib.sha256(data).hexdigest()
    assert (described["width"], described["height"]) == (1600, 1600)


def test_a_deadline_that_passes_in_an_upload_says_so(big_server, big_content, style):
    with Client(big_server.target) as client:
        client.info()  # the limits known, the call's deadline goes to the upload
        with pytest.raises(DeadlineExceeded, match=r"while uploading a picture of 48\.1 MiB"):
            client.stylize(big_content, style, timeout=0.01, **BIG_JOB)


def test_the_async_client_uploads_and_assembles_too(start_server, tmp_path, style):
    """A server taking requests of 256 KiB, a client taking messages of 64 KiB: a 300 KB
    content picture goes by upload, and the result of some 270 KB in chunks."""
    content = noise_png((300, 300), tmp_path / "content.png")
    assert content.stat().st_size > 256 * 1024
    limits = {"max_request_bytes": 256 * 1024, "max_image_bytes": 128 * 1024}
    small_messages = [("grpc.max_receive_message_length", 64 * 1024)]

    async def stylize(target: str) -> tuple[Any, Any]:
        async with AsyncClient(target, channel_options=small_messages) as client:
            result = await client.stylize(content, style, **{**BIG_JOB, "size": 300})
            upload_id = await client.upload_picture(content)
            again = await client.stylize(UploadedPicture(upload_id), style, size=32, iterations=2)
            return result, again

    with start_server(**limits) as srv:
        result, again = asyncio.run(stylize(srv.target))
        assert uploaded_bytes(srv) == content.stat().st_size
    assert len(result.data) > 2 * 64 * 1024
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    assert (again.width, again.height) == (32, 32)


def test_an_explicit_upload_names_a_picture_anywhere(server, content, style, tmp_path):
    with Client(server.target) as client:
        content_id = client.upload_picture(content)
        style_id = client.upload_picture(Image.open(style))
        assert content_id == f"sha256:{hashlib.sha256(content.read_bytes()).hexdigest()}"
        # Regions and registrations take uploads too.
        mask = tmp_path / "mask.png"
        Image.new("L", (64, 32), 255).save(mask)
        regions = Regions(style_masks=[UploadedPicture(client.upload_picture(mask))])
        result = client.stylize(
            UploadedPicture(content_id), UploadedPicture(style_id), regions=regions, size=32,
            iterations=2,
        )  # fmt: skip
        registered = client.register_style(UploadedPicture(style_id), size=32)
        named = client.stylize(
            UploadedPicture(content_id), style_id=registered, size=32, iterations=2
        )
        with pytest.raises(NotFound, match=r"^NOT_FOUND: content: this server does not hold"):
            client.stylize(UploadedPicture("sha256:" + "0" * 64), style, size=32)
        with pytest.raises(InvalidArgument, match="content.upload_id: is not an upload id"):
            client.stylize(UploadedPicture("my-picture"), style, size=32)
    assert (result.width, result.height) == (32, 16)
    assert (named.width, named.height) == (32, 16)


class _Tampering(pb_grpc.StyleTransferServiceServicer):
    """A server whose results arrive damaged: ``events`` are what it sends."""

    def __init__(self, events: list[pb.StyleTransferResponse]) -> None:
        self.events = events

    def StyleTransfer(self, request: Any, context: Any) -> Iterator[pb.StyleTransferResponse]:
        yield from self.events


@pytest.fixture
def tampering() -> Iterator[tuple[str, _Tampering]]:
    servicer = _Tampering([])
    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_StyleTransferServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0)


def _chunk(offset: int, data: bytes) -> pb.StyleTransferResponse:
    return pb.StyleTransferResponse(result_chunk=pb.ImageChunk(offset=offset, data=data))


def _result(data: bytes, claimed: bytes) -> pb.StyleTransferResponse:
    return pb.StyleTransferResponse(
        result=pb.Result(
            image=pb.Image(data=data),
            image_sha256=hashlib.sha256(claimed).hexdigest(),
            image_size_bytes=len(claimed),
        )
    )


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([_chunk(0, b"abc"), _chunk(3, b"deX"), _result(b"", b"abcdef")], "hash to"),
        ([_chunk(0, b"abc"), _chunk(4, b"def"), _result(b"", b"abcdef")], "offset 4"),
        ([_result(b"abcdeX", b"abcdef")], "hash to"),
        ([_chunk(0, b"abc"), _result(b"def", b"abcdef")], "both in chunks and whole"),
    ],
)
def test_a_damaged_result_is_a_clear_error_and_no_file(
    tampering, content, style, tmp_path, events, message
):
    target, servicer = tampering
    servicer.events = events
    with Client(target) as client, pytest.raises(DataLoss, match=message) as error:
        client.stylize(content, style)
    assert error.value.code is grpc.StatusCode.DATA_LOSS
    out = tmp_path / "out.png"
    done = subprocess.run(
        cli_command("stylize", str(content), str(style), "-o", str(out), "--server", target),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("styleserve: DATA_LOSS: ") and message in done.stderr
    assert not out.exists()


def test_a_stream_that_ends_without_a_result_is_internal(tampering, content, style):
    target, servicer = tampering
    servicer.events = [_chunk(0, b"abc")]
    with Client(target) as client, pytest.raises(Internal, match="without a result"):
        client.stylize(content, style)


def test_the_sdk_checks_an_intact_result_too(tampering, content, style):
    target, servicer = tampering
    servicer.events = [_chunk(0, b"abc"), _chunk(3, b"def"), _result(b"", b"abcdef")]
    with Client(target) as client:
        result = client.stylize(content, style)
    assert result.data == b"abcdef"
    assert result.sha256 == hashlib.sha256(b"abcdef").hexdigest()


def test_a_cut_off_upload_or_a_wrong_digest_is_a_clear_error_with_nothing_stored(server, content):
    data = content.read_bytes()
    messages = list(upload_requests(data, chunk=100))
    with Client(server.target) as client:
        stub = pb_grpc.StyleTransferServiceStub(client._channel)
        with pytest.raises(grpc.RpcError) as cut:
            stub.UploadPicture(iter(messages[:-1]), timeout=30)
        wrong = pb.UploadPictureRequest(
            header=pb.UploadHeader(sha256="0" * 64, size_bytes=len(data))
        )
        with pytest.raises(grpc.RpcError) as damaged:
            stub.UploadPicture(iter([wrong, *messages[1:]]), timeout=30)
        assert client.info().uploads.used_bytes == 0
    cut_off = from_rpc_error(cut.value)
    assert isinstance(cut_off, InvalidArgument)
    assert "the stream ended after" in cut_off.details and "nothing was stored" in cut_off.details
    mismatch = from_rpc_error(damaged.value)
    assert isinstance(mismatch, DataLoss) and "nothing was stored" in mismatch.details


def test_a_picture_too_large_for_a_server_without_uploads_is_refused_unsent(
    start_server, tmp_path, style
):
    content = noise_png((220, 220), tmp_path / "content.png")
    assert 128 * 1024 < content.stat().st_size < 256 * 1024
    limits = {"max_request_bytes": 256 * 1024, "max_image_bytes": 128 * 1024}
    with start_server(upload_store_bytes=0, **limits) as srv, Client(srv.target) as client:
        with pytest.raises(InvalidArgument, match=r"^INVALID_ARGUMENT: content: takes ") as error:
            client.stylize(content, style, size=32)
        assert "no uploads (upload_store_bytes 0)" in error.value.details
        info = subprocess.run(
            cli_command("info", "--server", srv.target), capture_output=True, text=True, timeout=60
        )
        assert "uploads    off: pictures must fit a request" in info.stdout
        assert sample(srv, "styleserve_requests_total", method="StyleTransfer", code="OK") == 0
        assert sample(srv, "styleserve_requests_total", method="UploadPicture", code="OK") == 0


def test_options_over_the_servers_limits_are_refused_before_the_upload(start_server, tmp_path):
    content = noise_png((220, 220), tmp_path / "content.png")
    limits = {"max_request_bytes": 128 * 1024, "max_image_bytes": 64 * 1024}
    with start_server(max_output_side=512, **limits) as srv, Client(srv.target) as client:
        with pytest.raises(InvalidArgument, match=r"^INVALID_ARGUMENT: options\.size: "):
            client.stylize(content, content, size=900)
        assert sample(srv, "styleserve_requests_total", method="UploadPicture", code="OK") == 0


def test_pictures_more_than_the_upload_store_holds_together_are_refused_unsent(
    start_server, tmp_path
):
    # Each fits the store, not both: the second upload would evict the first.
    content = noise_png((220, 220), tmp_path / "content.png")
    style = noise_png((221, 220), tmp_path / "style.png")
    limits = {"max_request_bytes": 128 * 1024, "max_image_bytes": 64 * 1024}
    store = {"upload_store_bytes": 200 * 1024}
    assert content.stat().st_size + style.stat().st_size > store["upload_store_bytes"]
    with start_server(**store, **limits) as srv, Client(srv.target) as client:
        with pytest.raises(ResourceExhausted, match="more than this server's upload store"):
            client.stylize(content, style, size=32)
        assert sample(srv, "styleserve_requests_total", method="UploadPicture", code="OK") == 0
