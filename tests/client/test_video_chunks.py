"""Cutting a clip into chunks and joining them back (styleserve.video_jobs): every frame once,
in order, the shared frames cross-faded; the calls run at once, each with a bounded number of
frames unanswered, and a failed chunk or a caller leaving early cancels every call."""

from __future__ import annotations

import io
import itertools
import queue
import random
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from PIL import Image
from styleserve.batch import InFlight
from styleserve.errors import Internal
from styleserve.info import ServerLimits
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.video_jobs import (
    Chunk,
    Joiner,
    StylizedFrame,
    VideoCall,
    VideoProgress,
    VideoResult,
    _Progress,
    plan_chunks,
    run_video,
    video_chunks,
)

from tests.client.client_helpers import png


@pytest.mark.parametrize("overlap", [0, 1, 4])
@pytest.mark.parametrize("max_frames", [1, 2, 5, 8, 13, 300])
def test_chunks_cover_the_clip_within_the_limit_with_disjoint_joins(max_frames, overlap):
    for frames in range(1, 80):
        chunks = plan_chunks(frames, max_frames, overlap)
        assert chunks[0].start == 0 and chunks[-1].stop == frames
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert all(1 <= len(c) <= max_frames for c in chunks)
        for earlier, later in itertools.pairwise(chunks):
            shared = earlier.stop - later.start
            assert 0 <= shared <= overlap and later.start > earlier.start
        # One join's shared frames end before the next join's begin.
        for first, _, third in zip(chunks, chunks[1:], chunks[2:], strict=False):
            assert first.stop <= third.start
        lengths = [len(c) for c in chunks[:-1]]
        assert not lengths or max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize(("chunk_frames", "concurrency"), [(0, 1), (-3, 1), (None, 0)])
def test_a_chunk_size_or_concurrency_below_one_is_refused_naming_it(chunk_frames, concurrency):
    # 0 frames a chunk was taken for "the server's"; 0 at once was the thread pool's error.
    named = "chunk_frames" if chunk_frames is not None else "concurrency"
    with pytest.raises(ValueError, match=f"^{named} must be at least 1"):
        video_chunks(30, ServerLimits(max_video_frames=12), chunk_frames, 2, concurrency)


def test_chunks_share_the_overlap_where_they_have_room():
    assert plan_chunks(20, 8, 2) == (Chunk(0, 0, 8), Chunk(1, 6, 14), Chunk(2, 12, 20))
    assert plan_chunks(8, 8, 2) == (Chunk(0, 0, 8),)


def test_a_short_clip_is_spread_over_the_slots_but_not_cut_small():
    chunks = plan_chunks(100, 300, 4, parallel=4)
    assert len(chunks) == 4 and max(len(c) for c in chunks) <= 29
    # Never below the shortest useful chunk.
    assert len(plan_chunks(30, 300, 4, parallel=8)) == 2


def _solid(value: int, size: tuple[int, int] = (8, 8)) -> bytes:
    return png(size, (value, value, value))


def _value(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(image.convert("RGB").getpixel((0, 0))[0])


def test_the_joiner_gives_every_frame_once_in_order_cross_fading_the_shared_ones():
    chunks = plan_chunks(30, 16, 4)
    joiner = Joiner(chunks, 92)
    # Chunk i paints every frame 60 * i: a fade from one to the next is visible as values.
    arrivals = [(c, i) for c in chunks for i in range(len(c))]
    random.Random(3).shuffle(arrivals)
    # Frames of one chunk arrive in order, chunks interleaved.
    arrivals.sort(key=lambda a: (a[1], random.Random(a[0].index).random()))
    out: list[StylizedFrame] = []
    for chunk, index in arrivals:
        joiner.add(chunk, index, _solid(60 * chunk.index))
        out.extend(joiner.ready())
    assert [f.index for f in out] == list(range(30))
    values = [_value(f.data) for f in out]
    for earlier, later in itertools.pairwise(chunks):
        fade = values[later.start : earlier.stop]
        assert len(fade) == 4
        low, high = 60 * earlier.index, 60 * later.index
        # Strictly from the earlier chunk's look towards the later one's, ends excluded.
        assert low < fade[0] < fade[1] < fade[2] < fade[3] < high, fade
    assert values[0] == 0 and values[-1] == 60 * chunks[-1].index


def test_a_joins_jpeg_frames_are_encoded_as_their_neighbours():
    # At quality 95; Pillow's default (75) made the cross-faded frames coarser.
    def jpeg(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (value, 90, 200)).save(buffer, "JPEG", quality=95)
        return buffer.getvalue()

    chunks = plan_chunks(12, 8, 2)
    joiner = Joiner(chunks, 92)
    for chunk in chunks:
        for index in range(len(chunk)):
            joiner.add(chunk, index, jpeg(40 * chunk.index))
    frames = list(joiner.ready())
    with Image.open(io.BytesIO(frames[0].data)) as alone:
        tables = alone.quantization
    shared = range(chunks[1].start, chunks[0].stop)
    assert len(shared) == 2
    for index in shared:
        with Image.open(io.BytesIO(frames[index].data)) as joined:
            assert joined.format == "JPEG" and joined.quantization == tables


def test_a_joins_webp_frames_are_made_at_the_jobs_quality():
    # A lossy WebP file does not say its quality; Pillow's default (80) made the cross-faded
    # frames of a quality-100 job coarser than their neighbours, half their size.
    cells = np.random.default_rng(5).integers(0, 256, (16, 16, 3), np.uint8)
    smooth = Image.fromarray(cells).resize((64, 64), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    smooth.save(buffer, "WEBP", quality=100)
    chunks = plan_chunks(12, 8, 2)

    def join_over_neighbour(quality: int) -> float:
        """A join's frame's size over its neighbour's, for a job of ``quality``."""
        joiner = Joiner(chunks, quality)
        for chunk in chunks:
            for index in range(len(chunk)):
                joiner.add(chunk, index, buffer.getvalue())
        frames = list(joiner.ready())
        join = frames[chunks[1].start].data
        assert Image.open(io.BytesIO(join)).format == "WEBP"
        return len(join) / len(frames[0].data)

    assert join_over_neighbour(100) > 0.9
    assert join_over_neighbour(80) < 0.6


def test_progress_counts_a_shared_frame_once():
    chunks = plan_chunks(20, 8, 2)
    progress = _Progress(chunks)
    for chunk in chunks:
        last = progress.update(chunk, len(chunk))
    assert (last.frames_done, last.frame_count, last.chunks) == (20, 20, 3)
    assert (last.chunk_frames_done, last.chunk_frame_count) == (8, 8)


# --- the calls, against a stand-in for the server ----------------------------------------------


class _Call:
    """A StylizeVideo call answered by a thread of its own: each frame back as it came, after
    ``delay``; it records how many frames were ever unanswered at once."""

    def __init__(self, server: FakeServer, requests: Iterator[pb.StylizeVideoRequest]) -> None:
        self._server = server
        self._requests = requests
        self._cancelled = threading.Event()

    def cancel(self) -> bool:
        self._cancelled.set()
        return True

    def __iter__(self) -> Iterator[pb.StylizeVideoResponse]:
        server = self._server
        start = next(self._requests).start
        with server.lock:
            server.starts.append(start)
            server.running += 1
            server.most_running = max(server.most_running, server.running)
        try:
            for request in self._requests:
                if self._cancelled.is_set():
                    server.cancelled += 1
                    raise _Cancelled()
                frame = request.frame
                if server.fail_at == (start.job.request_id, frame.index):
                    raise _Failed()
                server.wait.wait(10)
                time.sleep(server.delay)
                yield pb.StylizeVideoResponse(
                    progress=pb.VideoProgress(
                        frames_done=frame.index + 1, frame_count=start.frame_count
                    )
                )
                yield pb.StylizeVideoResponse(
                    frame=pb.VideoFrameResult(index=frame.index, image=frame.image)
                )
            yield pb.StylizeVideoResponse(
                result=pb.VideoResult(frames=start.frame_count, width=8, height=8)
            )
        finally:
            with server.lock:
                server.running -= 1


class _Failed(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INTERNAL

    def details(self) -> str:
        return "the frame broke the network"

    def trailing_metadata(self) -> tuple[()]:
        return ()


class _Cancelled(_Failed):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED


class FakeServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[pb.VideoStart] = []
        self.running = self.most_running = self.cancelled = 0
        self.fail_at: tuple[str, int] | None = None
        self.wait = threading.Event()
        self.wait.set()
        # Seconds per frame, long enough for the calls to overlap.
        self.delay = 0.01

    def StylizeVideo(self, requests: Iterator[pb.StylizeVideoRequest], **_: object) -> _Call:  # noqa: N802
        return _Call(self, requests)


def _video_call(server: FakeServer, in_flight: int = 2) -> VideoCall:
    def no_registration(*_: object) -> object:
        raise AssertionError("no style to register")

    job = pb.StyleTransferRequest(request_id="clip")
    limits = ServerLimits(max_video_frames=12, max_frames_in_flight=in_flight)
    return VideoCall(
        stub=server,
        job=job,
        fps=24.0,
        limits=limits,
        call_options={},
        registration=no_registration,
        register=no_registration,
        upload=lambda job: job,
        in_flight=InFlight(),
    )


def _frames(count: int) -> list[bytes]:
    # Frame i is grey level 8 * i: the joined output shows where each frame went.
    return [_solid(8 * i) for i in range(count)]


def test_chunks_run_at_once_and_the_joined_frames_come_once_in_order():
    server = FakeServer()
    chunks = plan_chunks(30, 12, 4)
    events = list(run_video(_video_call(server), _frames(30), chunks, concurrency=3))
    frames = [e for e in events if isinstance(e, StylizedFrame)]
    # Each chunk answers its own frames, so a cross-fade of equal frames is that frame.
    assert [(f.index, _value(f.data)) for f in frames] == [(i, 8 * i) for i in range(30)]
    assert sorted(s.job.request_id for s in server.starts) == ["clip.0", "clip.1", "clip.2"]
    assert [(s.frame_count, s.frames_per_second) for s in server.starts] == [(12, 24.0)] * 3
    assert server.most_running == 3
    progress = [e for e in events if isinstance(e, VideoProgress)]
    assert progress[0].frames_done == 0 and progress[-1].frames_done == 30
    assert all(p.frame_count == 30 for p in progress)
    (result,) = [e for e in events if isinstance(e, VideoResult)]
    assert events[-1] is result and result.frames == 30
    assert [c.chunk for c in result.chunks] == list(chunks)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_chunks_one_or_two_at_a_time_still_reach_the_end(concurrency):
    # A join's frames wait for the later chunk: with one call at a time, it must start once
    # the earlier one ends (it hung there, on a one-slot server's clip over max_video_frames).
    server = FakeServer()
    chunks = plan_chunks(30, 12, 4)
    assert len(chunks) == 3 and chunks[0].stop > chunks[1].start
    events = list(run_video(_video_call(server), _frames(30), chunks, concurrency=concurrency))
    frames = [e for e in events if isinstance(e, StylizedFrame)]
    assert [(f.index, _value(f.data)) for f in frames] == [(i, 8 * i) for i in range(30)]
    assert server.most_running == concurrency


def test_no_more_frames_are_unanswered_than_the_server_allows():
    server = FakeServer()
    server.wait.clear()
    sent: list[int] = []
    call = _video_call(server, in_flight=2)
    original = call.stub.StylizeVideo

    def counting(requests: Iterator[pb.StylizeVideoRequest], **kwargs: object) -> _Call:
        # Like real gRPC, a thread of its own pulls the request generator as fast as it yields,
        # whether or not the server has answered: only the gate holds the frames back.
        pulled: queue.Queue[pb.StylizeVideoRequest | None] = queue.Queue()

        def drain() -> None:
            for request in requests:
                sent.append(request.WhichOneof("part") == "frame")
                pulled.put(request)
            pulled.put(None)

        threading.Thread(target=drain, daemon=True).start()
        return original(iter(pulled.get, None), **kwargs)

    server.StylizeVideo = counting  # type: ignore[method-assign]
    events = run_video(call, _frames(10), plan_chunks(10, 12), concurrency=1)
    assert isinstance(next(events), VideoProgress)
    reader = threading.Thread(target=lambda: list(events))
    reader.start()
    # The drain pulls every frame the generator gives; the gate stops it at two unanswered
    # (without the gate all ten would be pulled by now).
    threading.Event().wait(0.5)
    assert sum(sent) <= 3
    server.wait.set()
    reader.join(10)
    assert sum(sent) == 10


def test_a_failed_chunk_cancels_the_others_and_raises():
    server = FakeServer()
    server.fail_at = ("clip.1", 2)
    with pytest.raises(Internal, match="broke the network"):
        list(run_video(_video_call(server), _frames(30), plan_chunks(30, 12, 4), concurrency=3))
    assert server.running == 0
    assert server.cancelled == 2  # the two chunks that did not fail


def test_leaving_early_cancels_every_call():
    server = FakeServer()
    events = run_video(_video_call(server), _frames(30), plan_chunks(30, 12, 4), concurrency=3)
    for event in events:
        if isinstance(event, StylizedFrame):
            server.wait.clear()  # the calls stall with frames in flight
            break
    events.close()
    server.wait.set()
    assert server.running == 0
    assert server.cancelled == 3


def test_a_short_answer_is_an_error():
    server = FakeServer()
    call = _video_call(server)
    frames = _frames(5)
    chunks = (Chunk(0, 0, 6),)
    with pytest.raises(ValueError, match="fewer than the 6"):
        list(run_video(call, frames, chunks, concurrency=1))
