"""Pictures larger than a message, over a real loopback server: UploadPicture into the store of
uploads, requests naming uploads wherever a picture goes, results in chunks within the caller's
largest message, and every refusal (nothing stored after any of them).

The calls go through the generated stubs, so that they test the wire contract itself; the
store's eviction and expiry are tested on the store alone, with a clock of the test's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.options import OptionsError
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server.metrics import Metrics
from styleserve_server.uploads import UnknownUpload, UploadStore

from tests.server.service_helpers import connect, encoded, request, rpc_error, sample

pytestmark = pytest.mark.timeout(180)

MiB = 2**20


def noise(size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG of random pixels: it compresses to about its raw size, at any scale."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    return encoded(Image.fromarray(pixels), "PNG", compress_level=1)


def parts(
    data: bytes,
    *,
    sha256: str | None = None,
    size: int | None = None,
    chunk: int = MiB,
    header: bool = True,
) -> Iterator[pb.UploadPictureRequest]:
    """An UploadPicture stream of ``data``: its header (digest and size as given, else the
    true ones), then its chunks."""
    if header:
        declared = pb.UploadHeader(
            sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
            size_bytes=len(data) if size is None else size,
        )
        yield pb.UploadPictureRequest(header=declared)
    for offset in range(0, len(data), chunk):
        yield pb.UploadPictureRequest(chunk=data[offset : offset + chunk])


def uploads(stub: Any, **call: Any) -> pb.UploadStoreInfo:
    return stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30, **call).uploads


def refused(stub: Any, messages: Iterator[pb.UploadPictureRequest]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadPicture(messages, timeout=30)
    return info.value


def events(stub: Any, job: pb.StyleTransferRequest) -> list[pb.StyleTransferResponse]:
    return list(stub.StyleTransfer(job, timeout=120))


def test_an_upload_is_named_by_its_digest_and_stored_once(start_server):
    data = noise((64, 48))
    with start_server() as srv, connect(srv.target) as stub:
        first = stub.UploadPicture(parts(data, chunk=1000), timeout=30)
        assert first.upload_id == f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert (first.size_bytes, first.expire_seconds) == (len(data), 3600)
        again = stub.UploadPicture(parts(data), timeout=30)
        assert again.upload_id == first.upload_id
        store = uploads(stub)
        assert (store.used_bytes, store.max_bytes) == (len(data), 2**30)
        assert (store.max_upload_bytes, store.expire_seconds) == (256 * MiB, 3600)
        assert sample(srv, "styleserve_requests_total", method="UploadPicture", code="OK") == 2
        assert sample(srv, "styleserve_upload_store_entries") == 1
        # The upload stands for the bytes: the same job, the same picture.
        by_bytes = events(stub, request(content=data, seed=3))[-1].result
        job = request(seed=3)
        job.content.Clear()
        job.content.upload_id = first.upload_id
        by_upload = events(stub, job)[-1].result
    assert by_upload.image.data == by_bytes.image.data
    assert by_upload.image_sha256 == hashlib.sha256(by_upload.image.data).hexdigest()
    assert by_upload.image_size_bytes == len(by_upload.image.data)


def test_every_picture_of_a_request_may_be_an_upload_larger_than_a_request(start_server):
    """A server taking requests of 64 KiB: the content, style, starting picture and masks
    each more than that, sent by upload."""
    big = noise((200, 150))
    assert len(big) > 64 * 1024
    mask = encoded(Image.new("L", (200, 150), 255), "PNG")
    limits = {"max_request_bytes": 64 * 1024, "max_image_bytes": 32 * 1024}
    with start_server(**limits) as srv, connect(srv.target) as stub:
        inline = rpc_error(stub.StyleTransfer(request(content=big), timeout=60))
        assert inline.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # over gRPC's message limit
        upload_id = stub.UploadPicture(parts(big, chunk=16 * 1024), timeout=30).upload_id
        mask_id = stub.UploadPicture(parts(mask), timeout=30).upload_id
        job = request(content=b"", styles=[b""], init=pb.INIT_IMAGE)
        for image in (job.content, job.styles[0].image, job.init_image):
            image.upload_id = upload_id
        job.regions.style_masks.add(upload_id=mask_id)
        result = events(stub, job)[-1].result
        assert (result.width, result.height) == (32, 24)
        # A registration's pictures, too.
        registration = pb.RegisterStyleRequest(
            styles=[pb.StylePicture(image=pb.Image(upload_id=upload_id))],
            options=pb.StyleOptions(size=32),
        )
        assert stub.RegisterStyle(registration, timeout=60).style_id.startswith("sty_")
        # Bytes in the request still obey max_image_bytes, and say how to send more.
        too_big = rpc_error(stub.StyleTransfer(request(content=noise((110, 110))), timeout=60))
    assert too_big.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert too_big.details().startswith("content: takes ") and "UploadPicture" in too_big.details()


def test_a_request_names_an_upload_it_may_name(start_server):
    with start_server() as srv, connect(srv.target) as stub:
        unknown = request()
        unknown.styles[0].image.Clear()
        unknown.styles[0].image.upload_id = "sha256:" + "ab" * 32
        error = rpc_error(stub.StyleTransfer(unknown, timeout=30))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert error.details().startswith("styles[0]: ")
        assert "sha256:" + "ab" * 32 in error.details() and "upload the picture again" in (
            error.details()
        )
        both = request()
        both.content.upload_id = "sha256:" + "ab" * 32
        error = rpc_error(stub.StyleTransfer(both, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("content: sets both data and upload_id")
        neither = request()
        neither.regions.style_masks.add()
        error = rpc_error(stub.StyleTransfer(neither, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("regions.style_masks[0]: is empty")
        hostile = request(init=pb.INIT_IMAGE)
        hostile.init_image.upload_id = "sha256:" + "x" * 100_000
        error = rpc_error(stub.StyleTransfer(hostile, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("init_image.upload_id: is not an upload id")
        assert "xxxxx" not in error.details()
        # Nothing was stored by any of them.
        assert uploads(stub).used_bytes == 0


def test_a_cut_off_upload_or_a_wrong_digest_stores_nothing(start_server):
    data = noise((64, 64))
    with start_server() as srv, connect(srv.target) as stub:
        short = refused(stub, parts(data[:-10], size=len(data), sha256="0" * 64))
        assert short.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert short.details() == (
            f"header.size_bytes: the stream ended after {len(data) - 10} of the declared "
            f"{len(data)} bytes: nothing was stored; upload the picture again"
        )
        wrong = refused(stub, parts(data, sha256="0" * 64))
        assert wrong.code() is grpc.StatusCode.DATA_LOSS
        assert wrong.details().startswith("header.sha256: the bytes received hash to ")
        assert "nothing was stored" in wrong.details()
        assert uploads(stub).used_bytes == 0
        assert sample(srv, "styleserve_upload_store_entries") == 0
        # A request naming what was never stored finds nothing.
        job = request()
        job.content.Clear()
        job.content.upload_id = f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert rpc_error(stub.StyleTransfer(job, timeout=30)).code() is grpc.StatusCode.NOT_FOUND


def test_bytes_past_the_declared_size_end_the_upload_at_once(start_server):
    """The server stops reading at the first byte too many: the rest of the stream is never
    asked for (the client's iterator stays blocked until the test lets it go)."""
    data = noise((64, 64))
    held = threading.Event()
    sent_after: list[int] = []

    def stream() -> Iterator[pb.UploadPictureRequest]:
        yield from parts(data, size=100)
        held.wait(30)
        sent_after.append(1)
        yield pb.UploadPictureRequest(chunk=b"more")

    with start_server() as srv, connect(srv.target) as stub:
        error = refused(stub, stream())
        assert sent_after == []
        held.set()
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "chunk: runs past header.size_bytes (100): send exactly the declared bytes; "
            "nothing was stored"
        )
        assert uploads(stub).used_bytes == 0


@pytest.mark.parametrize(
    ("messages", "details"),
    [
        ([], "header: send an UploadHeader"),
        ([pb.UploadPictureRequest(chunk=b"abc")], "header: send an UploadHeader"),
        (
            [
                pb.UploadPictureRequest(header=pb.UploadHeader(sha256="0" * 64, size_bytes=3)),
                pb.UploadPictureRequest(header=pb.UploadHeader(sha256="0" * 64, size_bytes=3)),
            ],
            "header: comes once, first",
        ),
        (
            [pb.UploadPictureRequest(header=pb.UploadHeader(sha256="0" * 63, size_bytes=3))],
            "header.sha256: is not a SHA-256 digest",
        ),
        (
            [pb.UploadPictureRequest(header=pb.UploadHeader(sha256="A" * 64, size_bytes=3))],
            "header.sha256: is not a SHA-256 digest",
        ),
        (
            [pb.UploadPictureRequest(header=pb.UploadHeader(sha256="0" * 64))],
            "header.size_bytes: is 0",
        ),
    ],
)
def test_a_stream_that_is_no_upload_is_refused(server, messages, details):
    with connect(server.target) as stub:
        error = refused(stub, iter(messages))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(details)


def test_an_upload_larger_than_one_may_be_is_refused_before_its_bytes(start_server):
    header = pb.UploadHeader(sha256="0" * 64, size_bytes=300 * 1024)
    with start_server(max_upload_bytes=256 * 1024) as srv, connect(srv.target) as stub:
        assert uploads(stub).max_upload_bytes == 256 * 1024
        error = refused(stub, iter([pb.UploadPictureRequest(header=header)]))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than the 262144 one upload may hold" in error.details()
    # A store smaller than max_upload_bytes bounds a single upload too, and says so.
    with start_server(upload_store_bytes=100 * 1024) as srv, connect(srv.target) as stub:
        assert uploads(stub).max_upload_bytes == 100 * 1024
        error = refused(stub, iter([pb.UploadPictureRequest(header=header)]))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than the 102400 one upload may hold" in error.details()


def test_a_store_busy_with_uploads_in_progress_refuses_for_now_only(start_server):
    """Room reserved by an upload in progress refuses another for the moment, without the
    never-retry trailer of a picture too large for the server and without evicting a stored
    upload for nothing; once the first ends, the other fits."""
    kept, held, sent = noise((16, 16)), noise((128, 96), seed=1), noise((64, 64), seed=2)
    go_on = threading.Event()

    def holding() -> Iterator[pb.UploadPictureRequest]:
        messages = parts(held)
        yield next(messages)  # the header reserves its room
        go_on.wait(30)
        yield from messages

    # Room for the held upload and the kept one, and for half the sent one beside them.
    room = len(held) + len(kept) + len(sent) // 2
    with start_server(upload_store_bytes=room) as srv, connect(srv.target) as stub:
        stub.UploadPicture(parts(kept), timeout=30)
        first = stub.UploadPicture.future(holding(), timeout=30)
        # The header is read when GetServerInfo counts its room as reserved.
        while uploads(stub).used_bytes < len(kept) + len(held):
            assert not first.done(), first.exception()
            time.sleep(0.01)
        error = refused(stub, parts(sent))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the upload store is busy" in error.details()
        assert ("grpc-retry-pushback-ms", "-1") not in error.trailing_metadata()
        assert uploads(stub).used_bytes == len(kept) + len(held)
        go_on.set()
        assert first.result().size_bytes == len(held)
        assert stub.UploadPicture(parts(sent), timeout=30).size_bytes == len(sent)


def test_an_upload_that_stops_sending_is_let_go_with_its_room(start_server):
    go_on = threading.Event()

    def header_only() -> Iterator[pb.UploadPictureRequest]:
        yield next(parts(noise((64, 64))))
        go_on.wait(60)

    with start_server(stream_idle_seconds=1) as srv, connect(srv.target) as stub:
        try:
            error = refused(stub, header_only())
        finally:
            go_on.set()
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "(limits.stream_idle_seconds) for this call's next message" in error.details()
        assert uploads(stub).used_bytes == 0


def test_uploads_off(start_server):
    with start_server(upload_store_bytes=0) as srv, connect(srv.target) as stub:
        assert (uploads(stub).max_bytes, uploads(stub).max_upload_bytes) == (0, 0)
        error = refused(stub, parts(b"picture"))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "uploads are off" in error.details()
        job = request()
        job.content.Clear()
        job.content.upload_id = "sha256:" + "ab" * 32
        error = rpc_error(stub.StyleTransfer(job, timeout=30))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_uploads_need_the_token(start_server):
    token = (("authorization", "Bearer s3cret"),)
    data = noise((16, 16))
    with start_server(auth_token="s3cret") as srv, connect(srv.target) as stub:
        error = refused(stub, parts(data))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert uploads(stub, metadata=token).used_bytes == 0
        stored = stub.UploadPicture(parts(data), metadata=token, timeout=30)
        assert stored.size_bytes == len(data)
        assert sample(srv, "styleserve_requests_total", method="UploadPicture", code="OK") == 1


def _chunked(responses: list[pb.StyleTransferResponse]) -> tuple[bytes, pb.Result]:
    """The picture the result_chunk events assemble (checking their order), and the Result."""
    assembled = b""
    for response in responses:
        if response.WhichOneof("event") == "result_chunk":
            assert response.result_chunk.offset == len(assembled)
            assembled += response.result_chunk.data
    return assembled, responses[-1].result


@pytest.mark.parametrize("preset", ["default", "instant"])
def test_a_result_larger_than_the_callers_messages_comes_in_chunks(server, preset):
    cap = 64 * 1024
    content = noise((300, 300), seed=1)
    options = {"size": 300, "resize": pb.RESIZE_FILTER_NEAREST, "iterations": 1}
    if preset == "instant":
        options = {"size": 300, "preset": "instant"}
    with connect(server.target) as stub:
        whole = events(stub, request(content=content, seed=5, **options))
        delivery = pb.DeliveryOptions(max_message_bytes=cap)
        chunked = events(stub, request(content=content, seed=5, delivery=delivery, **options))
        small = rpc_error(
            stub.StyleTransfer(request(delivery=pb.DeliveryOptions(max_message_bytes=1000)))
        )
    expected = whole[-1].result.image.data
    assert len(expected) > 2 * cap
    assert all(response.ByteSize() <= cap for response in chunked)
    kinds = [response.WhichOneof("event") for response in chunked]
    assert kinds.count("result_chunk") == -(-len(expected) // (cap - 1024))
    assembled, result = _chunked(chunked)
    assert assembled == expected and result.image.data == b""
    assert result.image_sha256 == hashlib.sha256(expected).hexdigest()
    assert result.image_size_bytes == len(expected)
    assert whole[-1].result.image_sha256 == result.image_sha256
    assert small.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert small.details().startswith("delivery.max_message_bytes: is 1000")


def test_the_store_evicts_the_least_recently_used_and_expires_the_unused():
    now = [0.0]
    store = UploadStore(300, 200, 60, Metrics(), clock=lambda: now[0])

    async def put(data: bytes) -> str:
        async def messages() -> Any:
            for message in parts(data):
                yield message

        return (await store.receive(messages())).upload_id

    a, b, c = (asyncio.run(put(bytes([n]) * 100)) for n in (1, 2, 3))
    assert store.info().used_bytes == 300
    now[0] = 10
    assert store.get("content", a) == b"\x01" * 100  # a is now the most recently used
    d = asyncio.run(put(b"\x04" * 100))  # room for d: b goes, the least recently used
    with pytest.raises(UnknownUpload, match="styles\\[0\\]: this server does not hold"):
        store.get("styles[0]", b)
    assert {store.get("content", i)[0] for i in (a, c, d)} == {1, 3, 4}
    now[0] = 69  # c, d and a were used at 10: all expire after 60 s unused
    assert store.get("content", a)[0] == 1
    now[0] = 71
    assert store.info().used_bytes == 100
    with pytest.raises(UnknownUpload):
        store.get("content", c)
    with pytest.raises(OptionsError, match="content.upload_id: is not an upload id"):
        store.get("content", "sty_" + "0" * 64)
