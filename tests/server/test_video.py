"""StylizeVideo through the raw stubs on a real loopback server: frames in order in both tiers,
consistency, every refusal of a bad call, cancellation and the bound on frames read ahead."""

from __future__ import annotations

import io
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_server import outputs

from tests.server.service_helpers import (
    FAST,
    connect,
    encoded,
    request,
    rpc_error,
    sample,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

SHIFT = (3, 2)  # columns, rows the camera moves between frames
INSTANT = {"preset": "instant", "size": 32}


def scene(width: int = 200, height: int = 160) -> np.ndarray:
    """A smooth, textured scene (blurred seeded noise over gradients) for the camera to pan."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (height // 4, width // 4, 3), np.uint8)
    texture = np.asarray(Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height)], -1)
    return np.clip(0.6 * texture + 0.4 * ramp, 0, 255).astype(np.uint8)


def clip(frames: int, size: tuple[int, int] = (48, 36), grain: float = 0.0) -> list[np.ndarray]:
    """A camera panning over ``scene`` by SHIFT a frame, with fresh noise of ``grain`` levels
    on each frame (what makes independent frames flicker)."""
    rng = np.random.default_rng(3)
    whole = scene().astype(np.float32)
    w, h = size
    return [
        np.clip(
            whole[8 + i * SHIFT[1] : 8 + i * SHIFT[1] + h, 8 + i * SHIFT[0] : 8 + i * SHIFT[0] + w]
            + rng.normal(0, grain, (h, w, 3)),
            0,
            255,
        ).astype(np.uint8)
        for i in range(frames)
    ]


def png(frame: np.ndarray) -> bytes:
    return encoded(Image.fromarray(frame, "RGB"))


def start(frame_count: int, fps: float = 24.0, **options: Any) -> pb.StylizeVideoRequest:
    job = request(**options)
    job.ClearField("content")
    return pb.StylizeVideoRequest(
        start=pb.VideoStart(job=job, frame_count=frame_count, frames_per_second=fps)
    )


def frame(index: int, data: bytes) -> pb.StylizeVideoRequest:
    return pb.StylizeVideoRequest(frame=pb.VideoFrame(index=index, image=pb.Image(data=data)))


def video(
    frames: list[bytes], pulled: list[int] | None = None, **options: Any
) -> Iterator[pb.StylizeVideoRequest]:
    """A whole call's messages; ``pulled`` records each frame as gRPC takes it."""
    yield start(len(frames), **options)
    for i, data in enumerate(frames):
        if pulled is not None:
            pulled.append(i)
        yield frame(i, data)


def decoded(result: pb.VideoFrameResult) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.image.data)).convert("RGB"))


def events(responses) -> dict[str, list]:
    found: dict[str, list] = {}
    for response in responses:
        kind = response.WhichOneof("event")
        found.setdefault(kind, []).append(getattr(response, kind))
    return found


@pytest.mark.parametrize("options", [FAST, INSTANT], ids=["optimization", "instant"])
def test_a_clip_comes_back_frame_by_frame_in_order(server, options):
    frames = [png(f) for f in clip(3)]
    with connect(server.target) as stub:
        responses = list(stub.StylizeVideo(video(frames, **options), timeout=120))
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "result"
    found = events(responses)
    results = found["frame"]
    assert [r.index for r in results] == [0, 1, 2]
    assert all(decoded(r).shape == (24, 32, 3) for r in results)
    end = found["result"][0]
    assert (end.frames, end.width, end.height) == (3, 32, 24)
    assert end.effective_options.temporal_weight == pytest.approx(0.5 if options is FAST else 0.7)
    assert end.receipt.seed == end.effective_options.seed
    progress = found["progress"]
    assert progress[-1].frames_done == 3 and progress[-1].frame_count == 3
    total = found["started"][0].total_iterations
    if options is FAST:
        # Frame 0 runs a quarter-size iteration and its 3, each later one half of the 3 at
        # the output's size (Ruder et al.).
        assert total == 1 + 3 + 2 + 2
        assert progress[-1].iteration == total == progress[-1].total_iterations
        assert results[0].losses.temporal == 0 and results[0].consistent_fraction == 0
        assert all(r.losses.temporal > 0 and r.consistent_fraction > 0.5 for r in results[1:])
    else:
        assert total == 0 and all(r.losses.total == 0 for r in results)
        assert all(r.consistent_fraction > 0.5 for r in results[1:])
    method = "optimization" if options is FAST else "feed_forward"
    assert sample(server, "styleserve_video_frames_total", method=method) == 3


def change(results: list[pb.VideoFrameResult]) -> float:
    """Mean change between consecutive frames, each carried onto the next by the true motion."""
    dx, dy = SHIFT
    pictures = [decoded(r).astype(np.float32) for r in results]
    return float(
        np.mean(
            [
                np.abs(b[:-dy, :-dx] - a[dy:, dx:]).mean()
                for a, b in zip(pictures, pictures[1:], strict=False)
            ]
        )
    )


@pytest.mark.parametrize(
    "options",
    [{**FAST, "size": 48, "iterations": 4}, {**INSTANT, "size": 48}],
    ids=["optimization", "instant"],
)
def test_consistent_frames_change_less_than_independent_ones(server, options):
    frames = [png(f) for f in clip(4, grain=8.0)]
    with connect(server.target) as stub:
        made = {
            weight: events(
                stub.StylizeVideo(video(frames, temporal_weight=weight, **options), timeout=120)
            )["frame"]
            for weight in (0.0, 0.9)
        }
    assert change(made[0.9]) < 0.8 * change(made[0.0])


def frames_of(count: int) -> list[bytes]:
    return [png(f) for f in clip(count)]


def with_job(**fields: Any) -> Callable[[], Iterator[pb.StylizeVideoRequest]]:
    def messages() -> Iterator[pb.StylizeVideoRequest]:
        first = start(2)
        for name, value in fields.items():
            if isinstance(value, str | bool):
                setattr(first.start.job, name, value)
            else:
                getattr(first.start.job, name).CopyFrom(value)
        yield first
        yield from (frame(i, data) for i, data in enumerate(frames_of(2)))

    return messages


def started_with(count: int, fps: float = 24.0, **options: Any):
    def messages() -> Iterator[pb.StylizeVideoRequest]:
        yield start(count, fps, **options)
        yield from (frame(i, data) for i, data in enumerate(frames_of(max(1, min(count, 2)))))

    return messages


def frames_then(*frames: tuple[int, bytes], count: int = 2):
    def messages() -> Iterator[pb.StylizeVideoRequest]:
        yield start(count)
        yield from (frame(i, data) for i, data in frames)

    return messages


GOOD = frames_of(3)
WIDER = png(clip(1, size=(52, 36))[0])
BAD_CASES = {
    "no start": (lambda: iter([frame(0, GOOD[0])]), "start"),
    "content": (with_job(content=pb.Image(data=GOOD[0])), "start.job.content"),
    "init_image": (with_job(init_image=pb.Image(data=GOOD[0])), "start.job.init_image"),
    "regions": (
        with_job(regions=pb.Regions(label_map=pb.Image(data=GOOD[0]))),
        "start.job.regions",
    ),
    "no frames": (started_with(0), "start.frame_count"),
    "too many frames": (started_with(301), "start.frame_count"),
    "fps 0": (started_with(2, 0.0), "start.frames_per_second"),
    "fps nan": (started_with(2, math.nan), "start.frames_per_second"),
    "fps 121": (started_with(2, 121.0), "start.frames_per_second"),
    "weight": (started_with(2, temporal_weight=1.5), "start.job.options.temporal_weight"),
    "budget": (started_with(2, time_budget_seconds=5), "start.job.options.time_budget_seconds"),
    "size": (started_with(2, size=100_000), "start.job.options.size"),
    "frame 0 corrupt": (frames_then((0, b"not a picture")), "frames[0].image"),
    "frame 1 corrupt": (frames_then((0, GOOD[0]), (1, GOOD[1][:40])), "frames[1].image"),
    "frame 1 empty": (frames_then((0, GOOD[0]), (1, b"")), "frames[1].image"),
    "gap": (frames_then((0, GOOD[0]), (2, GOOD[1])), "frames[1].index"),
    "other size": (frames_then((0, GOOD[0]), (1, WIDER)), "frames[1].image"),
    "ends early": (frames_then((0, GOOD[0]), count=3), "frames"),
    "runs past": (frames_then((0, GOOD[0]), (1, GOOD[1]), (2, GOOD[2])), "frames"),
    "styles": (started_with(2, styles=[]), "start.job.styles"),
    "second start": (lambda: iter([start(2), frame(0, GOOD[0]), start(2)]), "frames[1]"),
    "detachable": (with_job(detachable=True), "start.job.detachable"),
    "request id": (with_job(request_id="two words"), "start.job.request_id"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_a_bad_call_is_invalid_argument_naming_the_field(server, case):
    messages, field = BAD_CASES[case]
    with connect(server.target) as stub:
        error = rpc_error(stub.StylizeVideo(messages(), timeout=60))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(f"{field}: "), error.details()
    assert len(error.details()) < 400
    wait_until(lambda: sample(server, "styleserve_running_jobs") == 0)
    wait_until(lambda: sample(server, "styleserve_instant_running_jobs") == 0)


def test_the_jobs_request_id_names_the_call(server):
    messages = with_job(request_id="clip-7.0")
    with connect(server.target) as stub:
        call = stub.StylizeVideo(messages(), timeout=60)
        responses = list(call)
        headers = dict(call.initial_metadata())
    assert headers["x-request-id"] == "clip-7.0"
    assert responses[-1].result.receipt.request_id == "clip-7.0"


def test_a_refused_video_call_is_named_by_its_jobs_request_id(server):
    first = start(2)
    first.start.job.request_id = "clip-8.1"
    with connect(server.target) as stub:
        error = rpc_error(stub.StylizeVideo(iter([first, frame(0, b"not a picture")]), timeout=60))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())["x-request-id"] == "clip-8.1"


def test_frame_0_naming_an_unknown_upload_is_not_found_naming_the_frame(server):
    unknown = pb.Image(upload_id="sha256:" + "ab" * 32)
    messages = [start(2), pb.StylizeVideoRequest(frame=pb.VideoFrame(index=0, image=unknown))]
    with connect(server.target) as stub:
        error = rpc_error(stub.StylizeVideo(iter(messages), timeout=60))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("frames[0].image: this server does not hold the upload")


def test_a_cancelled_video_frees_its_slot_for_the_next_job(start_server):
    with start_server(job_slots=1, queue_size=1) as srv, connect(srv.target) as stub:
        call = stub.StylizeVideo(video(frames_of(3), iterations=5000), timeout=120)
        for response in call:
            if response.WhichOneof("event") == "progress":
                break
        assert sample(srv, "styleserve_running_jobs") == 1
        call.cancel()
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)
        last = list(stub.StyleTransfer(request(), timeout=60))[-1]
        assert last.WhichOneof("event") == "result"
        wait_until(
            lambda: (
                sample(srv, "styleserve_requests_total", method="StylizeVideo", code="CANCELLED")
                == 1
            )
        )


def noise_frames(count: int, side: int) -> list[bytes]:
    """Frames that do not compress (about 3 bytes a pixel), so that a few fill the windows."""
    rng = np.random.default_rng(5)
    return [
        encoded(Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)))
        for _ in range(count)
    ]


def test_a_caller_that_reads_nothing_stops_the_reading_of_its_frames(start_server):
    in_flight = 2
    settings = {"max_frames_in_flight": in_flight, "stream_window_bytes": 64 * 1024}
    # Without BDP probing the caller's receive window stays at its 64 KiB.
    options = [("grpc.http2.bdp_probe", 0)]
    frames = noise_frames(30, 160)  # 75 KB each: one fills a window
    pulled: list[int] = []
    with start_server(**settings) as srv, grpc.insecure_channel(srv.target, options) as channel:
        stub = pb_grpc.StyleTransferServiceStub(channel)
        call = stub.StylizeVideo(video(frames, pulled, **{**INSTANT, "size": 160}), timeout=120)
        assert next(call).WhichOneof("event") == "queued"
        time.sleep(3.0)  # the server works on while the caller reads nothing
        ahead = len(pulled)
        # The frames in flight, the answers the windows hold (one or two of 75 KB) and one
        # frame each in the caller's and the server's window.
        assert ahead <= in_flight + 4, ahead
        results = [r.frame for r in call if r.WhichOneof("event") == "frame"]
    assert [r.index for r in results] == list(range(30))


def test_a_caller_that_stops_sending_is_let_go_and_its_slot_freed(start_server):
    frames = noise_frames(3, 32)
    go_on = threading.Event()

    def stalling() -> Iterator[pb.StylizeVideoRequest]:
        messages = video(frames, **FAST)
        yield from itertools.islice(messages, 2)  # the start and frame 0: the job runs
        go_on.wait(60)

    with start_server(job_slots=1, stream_idle_seconds=1) as srv, connect(srv.target) as stub:
        limits = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).limits
        assert limits.stream_idle_seconds == 1
        try:
            error = rpc_error(stub.StylizeVideo(stalling(), timeout=120))
        finally:
            go_on.set()
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.details().startswith(
            "the server waited 1 s (limits.stream_idle_seconds) for this call's next frame"
        )
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0, timeout=10)


def test_a_caller_that_sends_each_frame_after_the_last_answer_is_not_idle(
    start_server, monkeypatch
):
    # Each frame takes the server over the idle bound (its encoding is slowed to 1.5 s); the
    # caller sends the next, and closes its stream, only once the last is answered: it owes
    # the server nothing meanwhile.
    encode = outputs.encode

    def slow(*args: Any, **kwargs: Any) -> bytes:
        time.sleep(1.5)
        return encode(*args, **kwargs)

    monkeypatch.setattr(outputs, "encode", slow)
    frames = noise_frames(3, 32)
    answered = threading.Semaphore(0)

    def lockstep() -> Iterator[pb.StylizeVideoRequest]:
        messages = video(frames, **INSTANT)
        yield from itertools.islice(messages, 2)  # the start and frame 0
        for message in messages:
            assert answered.acquire(timeout=60)
            yield message
        assert answered.acquire(timeout=60)

    with start_server(stream_idle_seconds=1) as srv, connect(srv.target) as stub:
        seen = []
        for response in stub.StylizeVideo(lockstep(), timeout=120):
            kind = response.WhichOneof("event")
            seen.append(kind)
            if kind == "frame":
                answered.release()
    assert seen.count("frame") == 3 and seen[-1] == "result"


def test_a_caller_that_stops_reading_is_let_go_and_its_slot_freed(start_server):
    # As in the test above of a caller that reads nothing, but the server lets it go.
    settings = {"max_frames_in_flight": 2, "stream_window_bytes": 64 * 1024}
    options = [("grpc.http2.bdp_probe", 0)]
    frames = noise_frames(30, 160)
    with (
        start_server(job_slots=1, stream_idle_seconds=1, **settings) as srv,
        grpc.insecure_channel(srv.target, options) as channel,
    ):
        stub = pb_grpc.StyleTransferServiceStub(channel)
        call = stub.StylizeVideo(video(frames, **{**INSTANT, "size": 160}), timeout=120)
        assert next(call).WhichOneof("event") == "queued"
        ended = {"method": "StylizeVideo", "code": "DEADLINE_EXCEEDED"}
        wait_until(lambda: sample(srv, "styleserve_requests_total", **ended) == 1, timeout=30)
        wait_until(lambda: sample(srv, "styleserve_instant_running_jobs") == 0, timeout=10)
        error = rpc_error(call)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "for the caller to read this call's answers" in error.details()


def test_get_server_info_advertises_the_video_limits(start_server):
    with start_server(max_video_frames=12, max_video_fps=60, max_frames_in_flight=3) as srv:
        with connect(srv.target) as stub:
            limits = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30).limits
    assert (limits.max_video_frames, limits.max_video_fps, limits.max_frames_in_flight) == (
        12,
        60,
        3,
    )


def test_a_long_value_is_not_echoed(server):
    with connect(server.target) as stub:
        error = rpc_error(stub.StylizeVideo(started_with(2, preset="x" * 60)(), timeout=60))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("start.job.options.preset: ")
    assert "x" * 50 not in error.details()
