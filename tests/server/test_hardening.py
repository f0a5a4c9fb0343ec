"""Every request's cost bounded before it is paid, and nothing an unauthenticated caller can pin:
registrations under the job limits and admission, cancellable and drained with nothing stored,
long lists and strings refused as they arrive, unrecognised bytes named from their first bytes,
the token checked from the headers, bounded health names, callers' values never echoed whole,
and warnings through the JSON log, rate-limited. Live servers on the tiny network throughout.
"""

from __future__ import annotations

import concurrent.futures
import gc
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import types

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from PIL import Image, TiffTags
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_server import outputs

from tests.fixtures_server import SERVING, health
from tests.server.service_helpers import (
    connect,
    encoded,
    request,
    rpc_error,
    sample,
    server_process,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

TOKEN = (("authorization", "Bearer s3cret"),)


def registration(count: int = 1, side: int = 64, **options: object) -> pb.RegisterStyleRequest:
    data = encoded(Image.new("RGB", (side, side), (90, 60, 30)))  # a few KB at any size
    styles = [pb.StylePicture(image=pb.Image(data=data)) for _ in range(count)]
    return pb.RegisterStyleRequest(styles=styles, options=pb.StyleOptions(**options))


def timed(call):
    """(the call's error, its seconds) for a call that must fail."""
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value, time.perf_counter() - started


# A registration that takes seconds on the tiny network (8 pictures at 8 sizes up to 2048 px,
# about 6 s on 2 cores; one picture's forward pass at a time), so that a cancel, a deadline or
# a drain lands while it computes.
SLOW = {"count": 8, "side": 2048, "size": 2048, "scales": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}


def test_a_registration_over_the_size_limits_is_refused_before_any_work(start_server):
    with start_server(max_output_side=1024) as srv, connect(srv.target) as stub:
        error, seconds = timed(
            lambda: stub.RegisterStyle(registration(size=1024, style_scale=2.0), timeout=30)
        )
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "options.style_scale" in error.details() and "<= 1" in error.details()
        assert seconds < 0.5
        # A job is held to the same bound.
        job = request(size=1024, style_scale=4.0)
        assert (
            rpc_error(stub.StyleTransfer(job, timeout=30)).code()
            is grpc.StatusCode.INVALID_ARGUMENT
        )
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        assert info.style_cache.entries == 0


def test_a_registration_whose_targets_cannot_fit_is_refused_before_any_work(start_server):
    # The tiny network's targets at two sizes take 19 KB; the cache holds less.
    with start_server(style_cache_bytes=15_000) as srv, connect(srv.target) as stub:
        error, seconds = timed(lambda: stub.RegisterStyle(registration(size=256), timeout=30))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "style_cache_bytes" in error.details() and seconds < 0.5
        assert sample(srv, "styleserve_running_jobs") == 0


def test_a_registration_waits_for_a_job_slot(start_server):
    with start_server(job_slots=1) as srv, connect(srv.target) as stub:
        job = stub.StyleTransfer(request(iterations=5000), timeout=120)
        next(job)  # queued, then started: the only slot is taken
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            registered = pool.submit(stub.RegisterStyle, registration(), timeout=60)
            wait_until(lambda: sample(srv, "styleserve_queue_depth") == 1)
            assert not registered.done()
            job.cancel()
            assert registered.result(timeout=60).style_id.startswith("sty_")


def test_a_cancelled_registration_stops_frees_its_slot_and_stores_nothing(start_server, caplog):
    with start_server() as srv, connect(srv.target) as stub:
        call = stub.RegisterStyle.future(registration(**SLOW), timeout=120)
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 1)
        time.sleep(0.5)
        call.cancel()
        started = time.monotonic()
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0, timeout=10)
        freed = time.monotonic() - started
        assert freed < 3, f"the slot freed {freed:.1f} s after the cancel"
        # The stopped work's error was read: asyncio logs nothing when its future goes.
        gc.collect()
        assert "never retrieved" not in caplog.text
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        assert (info.style_cache.entries, info.style_cache.used_bytes) == (0, 0)
        responses = list(stub.StyleTransfer(request(iterations=2), timeout=60))
        assert responses[-1].HasField("result")


def test_a_deadline_stops_a_registration_too(start_server):
    with start_server() as srv, connect(srv.target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterStyle(registration(**SLOW), timeout=1.0)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0, timeout=5)
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).style_cache.entries == 0


def test_drain_stops_a_registration_within_its_grace(tmp_path):
    grace = 1.0
    arguments = ("--backbone", "tiny-vgg16", "--feed-forward", "tiny-arbitrary", "--no-warmup")
    with server_process(*arguments, "--grace-seconds", str(grace)) as srv:
        wait_until(lambda: health(srv.target) == SERVING, timeout=120)
        with connect(srv.target) as stub:
            call = stub.RegisterStyle.future(registration(**SLOW), timeout=120)
            time.sleep(1.0)
            srv.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            srv.process.wait(timeout=grace + 30)
            exited = time.monotonic() - signalled
            assert call.exception(timeout=30).code() is grpc.StatusCode.UNAVAILABLE
        assert exited < grace + 2, f"the process took {exited:.1f} s to exit"
        assert not [r for r in srv.logs if r["message"] == "style registered"]


@pytest.fixture(scope="module")
def logged_server():
    """A server process whose JSON log gives each call's own seconds (from the request's
    arrival to its status), the server's cost without the client's or the transfer's."""
    arguments = ("--backbone", "tiny-vgg16", "--feed-forward", "tiny-arbitrary", "--no-warmup")
    with server_process(*arguments) as srv:
        wait_until(lambda: health(srv.target) == SERVING, timeout=120)
        with connect(srv.target) as stub:
            stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
            yield srv, stub


def refused_in(
    srv, stub, job: pb.StyleTransferRequest, request_id: str
) -> tuple[grpc.RpcError, float]:
    """The refusal of ``job`` and the seconds the server spent on it, by its log line: the
    least of three tries (the cost is the server's; a busy machine only adds to it)."""
    # In the metadata too: a request refused from its wire bytes is never parsed for its id.
    job.request_id = request_id
    metadata = (("x-request-id", request_id),)
    for _ in range(3):
        error = rpc_error(stub.StyleTransfer(job, metadata=metadata, timeout=60))

    def lines() -> list[dict]:
        return [r for r in srv.logs if r.get("request_id") == request_id and "code" in r]

    wait_until(lambda: len(lines()) == 3)
    return error, min(line["seconds"] for line in lines())


def test_over_long_lists_and_strings_are_refused_as_they_arrive(logged_server):
    srv, stub = logged_server
    limits = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).limits
    assert (limits.max_scales, limits.max_layers, limits.max_name_length) == (8, 16, 64)
    # Millions of entries: refused from the wire's length prefix, before protobuf parses them;
    # just past a limit: refused naming the limit.
    cases = [
        ("options: takes", pb.StyleOptions(scales=[0.5] * 7_000_000)),
        ("options: takes", pb.StyleOptions(style_layers=["block1_conv1"] * 2_000_000)),
        ("options: takes", pb.StyleOptions(preset="p" * 1_000_000)),
        ("options.scales: has 9 entries", pb.StyleOptions(scales=[0.5] * 8 + [1.0])),
        ("options.style_layers: has 17", pb.StyleOptions(style_layers=["block1_conv1"] * 17)),
        ("options.content_layers[0]: is 65", pb.StyleOptions(content_layers=["x" * 65])),
        ("options.preset: is 65 characters", pb.StyleOptions(preset="p" * 65)),
    ]
    for i, (field, options) in enumerate(cases):
        job = request()
        job.options.CopyFrom(options)
        error, seconds = refused_in(srv, stub, job, f"long-{i}")
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert error.details().startswith(field) and len(error.details()) < 200
        assert seconds < 0.05, f"{field}: {seconds:.3f} s"
        style = registration()
        style.options.CopyFrom(options)
        refused = rpc_error(_unary(stub.RegisterStyle, style))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT, field


def _unary(method, message):
    """A unary call as a one-message iterable, for rpc_error."""
    yield method(message, timeout=30)


def test_long_values_are_never_echoed_whole(start_server):
    long = "é\n" + "z" * 60
    with start_server() as srv, connect(srv.target) as stub:
        for options in (
            pb.StyleOptions(backbone=long),
            pb.StyleOptions(loss_normalization=long),
            pb.StyleOptions(style_layers=[long[:60]]),
        ):
            job = request()
            job.options.CopyFrom(options)
            details = rpc_error(stub.StyleTransfer(job, timeout=30)).details()
            assert "z" * 50 not in details and "\n" not in details, details


def test_unrecognised_large_bytes_are_named_from_their_first_bytes(logged_server):
    srv, stub = logged_server
    eps = b"\xc5\xd0\xd3\xc6" + os.urandom(15_900_000)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    for data, named in ((eps, "an EPS picture"), (gif.getvalue(), "a GIF picture")):
        job = request()
        job.content.data = data
        error, seconds = refused_in(srv, stub, job, named.replace(" ", "-"))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert f"content: is {named}; send PNG, JPEG or WebP" == error.details()
        assert seconds < 0.1, f"{named}: {seconds:.3f} s"


def test_the_token_is_checked_before_the_request_is_read(start_server):
    with start_server(auth_token="s3cret\n") as srv, connect(srv.target) as stub:
        big = request()
        big.content.data = os.urandom(30 * 1024 * 1024)
        started = time.perf_counter()
        error = rpc_error(stub.StyleTransfer(big, timeout=30))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert time.perf_counter() - started < 2
        assert (
            sample(srv, "styleserve_requests_total", method="StyleTransfer", code="UNAUTHENTICATED")
            == 1
        )
        # The token file's newline was dropped: the token itself authenticates.
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=TOKEN, timeout=30).version


def test_reflection_and_health_watch_follow_the_token(start_server):
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    for open_reflection in (False, True):
        with start_server(auth_token="s3cret", open_reflection=open_reflection) as srv:
            with grpc.insecure_channel(srv.target) as channel:
                reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = reflection.ServerReflectionInfo(iter([listing]), timeout=30)
                if open_reflection:
                    assert list(call)[0].list_services_response.service
                else:
                    assert rpc_error(call).code() is grpc.StatusCode.UNAUTHENTICATED
                health_stub = health_pb2_grpc.HealthStub(channel)
                watch = health_stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                assert rpc_error(watch).code() is grpc.StatusCode.UNAUTHENTICATED
                assert health(srv.target) == SERVING  # Check stays open for probes


def test_health_names_are_bounded(start_server):
    with start_server() as srv, grpc.insecure_channel(srv.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        long = health_pb2.HealthCheckRequest(service="s" * 100_000)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(long, timeout=30)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert rpc_error(stub.Watch(long, timeout=30)).code() is grpc.StatusCode.INVALID_ARGUMENT


def test_unauthenticated_watch_streams_pin_no_memory():
    """20 health Watch streams without the token, each with a 15 MB service name (before the
    token was checked from the headers, such streams held +963 MB for as long as they stayed
    open): each is refused at once, and round after round nothing accumulates."""
    arguments = ("--backbone", "tiny-vgg16", "--feed-forward", "tiny-arbitrary", "--no-warmup")
    name = health_pb2.HealthCheckRequest(service="s" * 15_000_000)
    with server_process(*arguments, "--auth-token", "s3cret") as srv:
        wait_until(lambda: health(srv.target) == SERVING, timeout=120)
        process = psutil.Process(srv.process.pid)
        after_round = []
        for _ in range(3):
            channels = [grpc.insecure_channel(srv.target) for _ in range(20)]
            try:
                started = time.perf_counter()
                watches = [health_pb2_grpc.HealthStub(c).Watch(name, timeout=60) for c in channels]
                codes = {rpc_error(watch).code() for watch in watches}
                seconds = time.perf_counter() - started
                time.sleep(0.5)
                after_round.append(process.memory_info().rss / 2**20)
            finally:
                for channel in channels:
                    channel.close()
            assert codes == {grpc.StatusCode.UNAUTHENTICATED} and seconds < 5
        held = after_round[-1] - after_round[0]
        assert held < 20, f"RSS after each round of 20 refused streams: {after_round} MB"


def exif_flood(tags: int = 65_535) -> bytes:
    """A PNG turned a quarter by its EXIF orientation, whose eXIf chunk also holds ``tags``
    entries of known tags with counts they should not have (each warns on a full decode)."""
    known = sorted(t for t, info in TiffTags.TAGS_V2.items() if info.length == 1 and t != 0x0112)
    data_at = 8 + 2 + 12 * tags + 4
    entries = [struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)]
    entries += [
        struct.pack("<HHII", known[i % len(known)], 1, 5 + i // len(known), data_at)
        for i in range(tags - 1)
    ]
    ifd = struct.pack("<H", tags) + b"".join(sorted(entries)) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(tags)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 24), (120, 60, 30)).save(buffer, "PNG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


def test_a_flood_of_exif_tags_writes_a_few_json_lines():
    arguments = ("--backbone", "tiny-vgg16", "--feed-forward", "tiny-arbitrary", "--no-warmup")
    with server_process(*arguments) as srv:
        wait_until(lambda: health(srv.target) == SERVING, timeout=120)
        job = request(iterations=1, size=32)
        job.content.data = exif_flood()
        job.request_id = "exif-flood"
        with connect(srv.target) as stub:
            result = list(stub.StyleTransfer(job, timeout=120))[-1].result
        assert (result.width, result.height) == (19, 32)  # upright: 24x40, at size 32
        assert not [r for r in srv.logs if "raw" in r], "lines that are not JSON"
        lines = [r for r in srv.logs if r.get("request_id") == "exif-flood"]
        assert len(lines) < 30, [r["message"] for r in lines]


def test_warnings_go_to_the_json_log_rate_limited():
    script = (
        "import warnings; from styleserve_server import logs; logs.configure('INFO', 'json')\n"
        "for i in range(2000): warnings.warn(f'odd metadata {i}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert 0 < len(records) <= 20
    assert all(r["logger"] == "py.warnings" for r in records)


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_a_refused_request_is_not_kept_after_its_call(start_server, traced):
    """gRPC keeps an aborted call's exception, which reaches the handler's frames again: a
    cycle only the garbage collector breaks. None of those frames may hold the request, the
    tracing interceptor's included."""
    job = request()
    # Refused EPS bytes, marked so that no other test's request matches.
    marked = b"\xc5\xd0\xd3\xc6" + os.urandom(16)
    job.content.data = marked + bytes(1_000_000)
    tracing = {"tracer_provider": TracerProvider()} if traced else {}
    with start_server(**tracing) as srv, connect(srv.target) as stub:
        gc.disable()  # as when the collector has not run yet
        try:
            for _ in range(3):
                assert (
                    rpc_error(stub.StyleTransfer(job, timeout=30)).code()
                    is grpc.StatusCode.INVALID_ARGUMENT
                )
            time.sleep(0.2)
            kept = [
                o
                for o in gc.get_objects()
                if type(o) is pb.StyleTransferRequest
                and o is not job
                and o.content.data.startswith(marked)
            ]
            # The request's bytes as they arrived (bytes are no objects the collector tracks:
            # they are found through the frames that hold them).
            held = [
                name
                for o in gc.get_objects()
                if type(o) is types.FrameType
                for name, value in o.f_locals.items()
                if type(value) is bytes and marked in value
            ]
        finally:
            gc.enable()
    assert not kept, f"{len(kept)} refused requests still held"
    assert not held, f"refused requests' bytes still held by frames, as {held}"


def test_running_out_of_memory_is_resource_exhausted_not_internal(start_server, monkeypatch):
    def exhausted(*_args: object, **_kwargs: object) -> pb.Result:
        raise MemoryError

    # Where a job's last allocation happens: the result's encoding.
    monkeypatch.setattr(outputs, "result", exhausted)
    with start_server() as srv, connect(srv.target) as stub:
        error = rpc_error(stub.StyleTransfer(request(iterations=2), timeout=60))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == (
            "out of memory for this job: ask for a smaller size or retry later"
        )
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0, timeout=10)
