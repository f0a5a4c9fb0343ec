"""A clip as several StylizeVideo calls at once, joined back into one stream of frames.

A server takes at most ``Limits.max_video_frames`` frames per call, and a deployment has many
slots behind one address, so ``stylize_video`` (``Client``'s on threads, ``AsyncClient``'s as
tasks) cuts a clip into chunks that overlap by a few frames, sends them as separate calls at
once (gRPC's per-call balancing spreads them over the replicas; the number at once is
``styleserve.batch.batch_concurrency``), and cross-fades each join's overlapping frames from
the earlier chunk's into the later one's: a chunk starts without the frames before it, so its
first frames differ from what the previous chunk made of them, and a cut there would show.
Every frame comes out once, in order.

Each call keeps at most ``Limits.max_frames_in_flight`` frames unanswered (its request
generator waits), as the server does, so the server's buffers stay bounded however slow the
caller's loop; the answers wait here for the loop, and at most ``concurrency`` chunks are
held in memory, inputs and outputs, however long the clip (and the frames a finished chunk
shares with the next).
A failed chunk, or the caller leaving the loop, cancels every call in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import math
import os
import queue
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any

from PIL import Image, JpegImagePlugin

from styleserve.batch import InFlight
from styleserve.calls import JobEvents, translated
from styleserve.convert import effective_options
from styleserve.errors import Internal, InvalidArgument, NotFound, VideoError
from styleserve.events import Receipt, Timings, _EncodedPicture, _fields, missing_result
from styleserve.info import ServerInfo, ServerLimits
from styleserve.options import MAX_REQUEST_ID_LENGTH, StyleOptions
from styleserve.pictures import Picture, encode_picture
from styleserve.request import Registration, Styles, build_request, with_pictures
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.video import VideoClip, open_video

__all__ = [
    "DEFAULT_OVERLAP",
    "AsyncVideoCall",
    "Chunk",
    "ChunkResult",
    "StylizedFrame",
    "VideoEvent",
    "VideoProgress",
    "VideoCall",
    "VideoResult",
    "clip_frames",
    "plan_chunks",
    "run_video",
    "run_video_async",
    "video_chunks",
    "video_job",
    "video_method",
]

# Frames shared by consecutive chunks and cross-faded at their join: a few, so that the switch
# from one chunk's look to the next is gradual without stylising many frames twice.
DEFAULT_OVERLAP = 4
# The shortest chunk cut to spread a clip over more slots: shorter ones would be mostly overlap.
MIN_CHUNK_FRAMES = 24


@dataclass(frozen=True)
class Chunk:
    """Frames ``start`` to ``stop`` (exclusive) of a clip: one StylizeVideo call."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_chunks(
    frame_count: int, max_frames: int, overlap: int = DEFAULT_OVERLAP, parallel: int = 1
) -> tuple[Chunk, ...]:
    """Chunks of at most ``max_frames`` frames covering ``frame_count``, consecutive ones
    sharing ``overlap`` frames (fewer where the chunks are too short to hold them), and at
    least ``parallel`` of them where that leaves each ``MIN_CHUNK_FRAMES`` or more, so that
    a short clip still spreads over every slot. Their lengths differ by one at most."""
    if frame_count < 1 or max_frames < 1:
        raise ValueError(f"need frames and a chunk size, got {frame_count} and {max_frames}")
    if overlap < 0:
        raise ValueError(f"overlap must be 0 or more, got {overlap}")
    length = max_frames
    if parallel > 1:
        spread = math.ceil((frame_count - overlap) / parallel) + overlap
        length = min(max_frames, max(MIN_CHUNK_FRAMES, spread))
    if frame_count <= length:
        return (Chunk(0, 0, frame_count),)
    # Each join's overlap must end before the next join starts.
    overlap = min(overlap, (length - 1) // 3)
    count = math.ceil((frame_count - overlap) / (length - overlap))
    starts = [(frame_count - overlap) * i // count for i in range(count)]
    stops = [start + overlap for start in starts[1:]] + [frame_count]
    return tuple(
        Chunk(i, start, stop) for i, (start, stop) in enumerate(zip(starts, stops, strict=True))
    )


def video_chunks(
    frame_count: int,
    limits: ServerLimits,
    chunk_frames: int | None,
    overlap: int,
    concurrency: int,
) -> tuple[Chunk, ...]:
    """``plan_chunks`` for a clip of ``frame_count`` frames on a server with ``limits``: chunks
    of at most its ``max_video_frames`` (``chunk_frames`` for fewer), ``concurrency`` at once.
    Raises ValueError for a ``chunk_frames`` or ``concurrency`` below 1."""
    for name, value in (("chunk_frames", chunk_frames), ("concurrency", concurrency)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")
    longest = min(chunk_frames or limits.max_video_frames, limits.max_video_frames)
    return plan_chunks(frame_count, longest, overlap, concurrency)


@dataclass(frozen=True)
class VideoProgress:
    """Where a clip stands: ``frames_done`` of its ``frame_count`` frames stylised (a frame
    two chunks share counts once), and the chunk this update is about, ``chunk_frames_done``
    of its ``chunk_frame_count``."""

    frames_done: int
    frame_count: int
    chunk: int
    chunks: int
    chunk_frames_done: int
    chunk_frame_count: int


@dataclass(frozen=True)
class StylizedFrame(_EncodedPicture):
    """Frame ``index`` of the clip, stylised, encoded in the job's output format."""

    index: int
    data: bytes


@dataclass(frozen=True)
class ChunkResult:
    """How one chunk was made: its frames, the options in effect and its provenance."""

    chunk: Chunk
    width: int
    height: int
    timings: Timings
    options: StyleOptions
    receipt: Receipt


@dataclass(frozen=True)
class VideoResult:
    """The end of a clip: ``frames`` frames of ``width`` x ``height``, and its chunks."""

    frames: int
    width: int
    height: int
    chunks: tuple[ChunkResult, ...]


VideoEvent = VideoProgress | StylizedFrame | VideoResult


def _blend(earlier: bytes, later: bytes, weight: float, quality: int) -> bytes:
    """``later`` over ``earlier`` by ``weight``, in ``earlier``'s encoding, so that a join's
    frames are no coarser than their neighbours (Pillow's own default is quality 75 for JPEG,
    80 for WebP): a JPEG keeps its quantisation tables and chroma subsampling, a WebP (whose
    file does not say its quality) is made at the job's ``quality``."""
    with Image.open(io.BytesIO(earlier)) as a, Image.open(io.BytesIO(later)) as b:
        kind = a.format or "PNG"
        kept: dict[str, Any] = {}
        if isinstance(a, JpegImagePlugin.JpegImageFile):
            kept = {"qtables": a.quantization, "subsampling": JpegImagePlugin.get_sampling(a)}
        elif kind == "WEBP":
            kept = {"quality": quality}
        mixed = Image.blend(a.convert("RGB"), b.convert("RGB").resize(a.size), weight)
    buffer = io.BytesIO()
    mixed.save(buffer, format=kind, **kept)
    return buffer.getvalue()


class Joiner:
    """Puts the chunks' frames, arriving in any order between chunks, back into the clip's
    order, cross-fading the frames two chunks share."""

    def __init__(self, chunks: tuple[Chunk, ...], quality: int) -> None:
        """``quality``: the job's output quality (``StyleOptions.output_quality``)."""
        self.chunks = chunks
        self.quality = quality
        self.next = 0
        self._frames: dict[tuple[int, int], bytes] = {}
        # Each frame's chunks: one, or two consecutive ones at a join.
        self._owners: list[tuple[Chunk, ...]] = [() for _ in range(chunks[-1].stop)]
        for chunk in chunks:
            for frame in range(chunk.start, chunk.stop):
                self._owners[frame] += (chunk,)

    @property
    def chunk(self) -> int:
        """The earliest chunk whose frames are still wanted."""
        if self.next >= len(self._owners):
            return len(self.chunks)
        return self._owners[self.next][0].index

    def add(self, chunk: Chunk, index: int, data: bytes) -> None:
        """Frame ``index`` of ``chunk`` (0-based in the chunk)."""
        self._frames[(chunk.index, index)] = data

    def ready(self) -> Iterator[StylizedFrame]:
        """The frames that can now go out, in order."""
        while self.next < len(self._owners):
            owners = self._owners[self.next]
            keys = [(c.index, self.next - c.start) for c in owners]
            if any(key not in self._frames for key in keys):
                return
            parts = [self._frames.pop(key) for key in keys]
            if len(parts) == 2:
                earlier, later = owners
                # 1/(n+1), ..., n/(n+1) of the later chunk over the n shared frames.
                weight = (self.next - later.start + 1) / (earlier.stop - later.start + 1)
                parts = [_blend(parts[0], parts[1], weight, self.quality)]
            yield StylizedFrame(self.next, parts[0])
            self.next += 1


class _Progress:
    """Frames stylised per chunk, and over the clip with shared frames counted once."""

    def __init__(self, chunks: tuple[Chunk, ...]) -> None:
        self.chunks = chunks
        self.done = [0] * len(chunks)

    def update(self, chunk: Chunk, done: int) -> VideoProgress:
        self.done[chunk.index] = done
        total = sum(self.done)
        for earlier, later in zip(self.chunks, self.chunks[1:], strict=False):
            twice = min(
                earlier.start + self.done[earlier.index], later.start + self.done[later.index]
            )
            total -= max(0, twice - later.start)
        return VideoProgress(
            total, self.chunks[-1].stop, chunk.index, len(self.chunks), done, len(chunk)
        )


class _Window:
    """Keeps a call's unanswered frames under the server's ``max_frames_in_flight``: its
    request generator waits for room (``_Gate`` on gRPC's thread, ``_AsyncGate`` on the event
    loop) until an answer makes it."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._sent = 0
        self._answered = 0
        self._closed = False

    def _room(self) -> bool:
        return self._closed or self._sent - self._answered < self._limit

    def _entered(self) -> bool:
        """One more frame sent; False once the call is over."""
        self._sent += 1
        return not self._closed


class _Gate(_Window):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._changed = threading.Condition()

    def enter(self) -> bool:
        """Waits for room for one more frame; False once the call is over."""
        with self._changed:
            self._changed.wait_for(self._room)
            return self._entered()

    def answered(self) -> None:
        with self._changed:
            self._answered += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class _AsyncGate(_Window):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._changed = asyncio.Condition()

    async def enter(self) -> bool:
        """Waits for room for one more frame; False once the call is over."""
        async with self._changed:
            await self._changed.wait_for(self._room)
            return self._entered()

    async def answered(self) -> None:
        async with self._changed:
            self._answered += 1
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


def _frame_request(index: int, data: bytes) -> pb.StylizeVideoRequest:
    return pb.StylizeVideoRequest(frame=pb.VideoFrame(index=index, image=pb.Image(data=data)))


def _requests(
    start: pb.VideoStart, frames: list[bytes], gate: _Gate
) -> Iterator[pb.StylizeVideoRequest]:
    yield pb.StylizeVideoRequest(start=start)
    for index, data in enumerate(frames):
        if not gate.enter():
            return
        yield _frame_request(index, data)


async def _requests_async(
    start: pb.VideoStart, frames: list[bytes], gate: _AsyncGate
) -> AsyncIterator[pb.StylizeVideoRequest]:
    yield pb.StylizeVideoRequest(start=start)
    for index, data in enumerate(frames):
        if not await gate.enter():
            return
        yield _frame_request(index, data)


@dataclass(frozen=True)
class _Message:
    """What a chunk's worker hands the caller's thread: one answer, its end, or its error."""

    chunk: Chunk
    frame: pb.VideoFrameResult | None = None
    progress: int | None = None
    result: ChunkResult | None = None
    error: BaseException | None = None


class _Answers:
    """One chunk's call's answers as messages for the caller's loop, checking that every
    frame came back before the result."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.frames = 0
        self.finished = False

    def message(self, response: pb.StylizeVideoResponse) -> _Message | None:
        kind = response.WhichOneof("event")
        if kind == "frame":
            self.frames += 1
            return _Message(self.chunk, frame=response.frame)
        if kind == "progress":
            return _Message(self.chunk, progress=response.progress.frames_done)
        if kind == "result":
            if self.frames != len(self.chunk):
                raise Internal(
                    f"chunk {self.chunk.index}: the server answered {self.frames} of its"
                    f" {len(self.chunk)} frames"
                )
            self.finished = True
            return _Message(self.chunk, result=_chunk_result(self.chunk, response.result))
        return None

    def end(self) -> None:
        """The stream ended: raises unless it brought the result."""
        if not self.finished:
            raise missing_result()


@dataclass(frozen=True)
class _Job:
    """What every chunk's call shares: the job, how to reach the server and what it allows."""

    stub: Any
    job: pb.StyleTransferRequest
    fps: float
    limits: ServerLimits
    call_options: dict[str, Any]
    # The registration of the job's style_id, to send its pictures where a replica lacks it.
    registration: Callable[[pb.StyleTransferRequest, NotFound, JobEvents, int], Registration]

    def start(self, chunk: Chunk, job: pb.StyleTransferRequest) -> pb.VideoStart:
        start = pb.VideoStart(job=job, frame_count=len(chunk), frames_per_second=self.fps)
        if job.request_id:
            suffix = f".{chunk.index}"
            start.job.request_id = job.request_id[: MAX_REQUEST_ID_LENGTH - len(suffix)] + suffix
        return start


@dataclass(frozen=True)
class VideoCall(_Job):
    """A clip's chunks as blocking calls, each on a thread of its own."""

    register: Callable[[Registration], object]
    # The job with its pictures too large for a request uploaded (``Client._uploaded``).
    upload: Callable[[pb.StyleTransferRequest], pb.StyleTransferRequest]
    in_flight: InFlight

    def run(self, chunk: Chunk, frames: list[bytes], out: queue.Queue[_Message]) -> None:
        """Stylises ``chunk`` and puts its answers on ``out``, ending with its result or
        error; a style the replica lacks is registered again once, as for pictures."""
        job = self.job
        try:
            for attempt in JobEvents.ATTEMPTS:
                events = JobEvents()
                try:
                    self._call(chunk, job, frames, out, events)
                    return
                except NotFound as error:
                    registration = self.registration(job, error, events, attempt)
                    self.register(registration)
                    job = self.upload(with_pictures(job, registration))
        except BaseException as error:  # handed to the caller's thread, which raises it
            out.put(_Message(chunk, error=error))

    def _call(
        self,
        chunk: Chunk,
        job: pb.StyleTransferRequest,
        frames: list[bytes],
        out: queue.Queue[_Message],
        events: JobEvents,
    ) -> None:
        gate = _Gate(self.limits.max_frames_in_flight)
        call = self.stub.StylizeVideo(
            _requests(self.start(chunk, job), frames, gate), **self.call_options
        )
        self.in_flight.add(call)
        answers = _Answers(chunk)
        try:
            with translated():
                # Read on past the result to the stream's end, so that the call ends OK on
                # the server rather than cancelled in a race with its status.
                for response in call:
                    events.started = True
                    message = answers.message(response)
                    if message is not None:
                        if message.frame is not None:
                            gate.answered()
                        out.put(message)
            answers.end()
        finally:
            gate.close()
            call.cancel()
            self.in_flight.discard(call)


@dataclass(frozen=True)
class AsyncVideoCall(_Job):
    """A clip's chunks as calls on an asyncio channel, each in a task of its own."""

    register: Callable[[Registration], Awaitable[object]]
    upload: Callable[[pb.StyleTransferRequest], Awaitable[pb.StyleTransferRequest]]

    async def run(self, chunk: Chunk, frames: list[bytes], out: asyncio.Queue[_Message]) -> None:
        """See ``VideoCall.run``; cancelling the task cancels the call."""
        job = self.job
        try:
            for attempt in JobEvents.ATTEMPTS:
                events = JobEvents()
                try:
                    await self._call(chunk, job, frames, out, events)
                    return
                except NotFound as error:
                    registration = self.registration(job, error, events, attempt)
                    await self.register(registration)
                    job = await self.upload(with_pictures(job, registration))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the caller's loop, which raises it
            out.put_nowait(_Message(chunk, error=error))

    async def _call(
        self,
        chunk: Chunk,
        job: pb.StyleTransferRequest,
        frames: list[bytes],
        out: asyncio.Queue[_Message],
        events: JobEvents,
    ) -> None:
        gate = _AsyncGate(self.limits.max_frames_in_flight)
        call = self.stub.StylizeVideo(
            _requests_async(self.start(chunk, job), frames, gate), **self.call_options
        )
        answers = _Answers(chunk)
        try:
            with translated():
                async for response in call:
                    events.started = True
                    message = answers.message(response)
                    if message is not None:
                        if message.frame is not None:
                            await gate.answered()
                        out.put_nowait(message)
            answers.end()
        finally:
            await gate.close()
            call.cancel()


def _chunk_result(chunk: Chunk, result: pb.VideoResult) -> ChunkResult:
    return ChunkResult(
        chunk,
        result.width,
        result.height,
        Timings(**_fields(result.timings, Timings)),
        effective_options(result.effective_options),
        Receipt.from_proto(result.receipt),
    )


class _Frames:
    """The clip's encoded frames, read once in order and handed out chunk by chunk (a join's
    frames to both of its chunks)."""

    def __init__(self, frames: Iterable[bytes]) -> None:
        self._frames = iter(frames)
        self._read = 0
        self._kept: list[bytes] = []

    def take(self, chunk: Chunk) -> list[bytes]:
        kept_from = self._read - len(self._kept)
        frames = self._kept[chunk.start - kept_from :]
        for data in self._frames:
            frames.append(data)
            self._read += 1
            if self._read == chunk.stop:
                break
        if len(frames) != len(chunk):
            raise ValueError(
                f"the clip has {self._read} frames, fewer than the {chunk.stop} it promised"
            )
        self._kept = frames
        return frames


class _Clip:
    """A clip's run, whatever drives its calls: which chunks start when, and the events the
    calls' messages make."""

    def __init__(
        self, job: _Job, frames: Iterable[bytes], chunks: tuple[Chunk, ...], concurrency: int
    ):
        self.source = _Frames(frames)
        self.chunks = chunks
        self.concurrency = concurrency
        self.joiner = Joiner(chunks, job.job.delivery.output_quality)
        self.progress = _Progress(chunks)
        self.results: list[ChunkResult] = []
        self.running: set[int] = set()
        self.started = 0
        self.announced = False

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.chunks)

    def to_start(self) -> Iterator[Chunk]:
        """The chunks to start now: a window from the earliest still wanted, so that memory
        stays bounded however far one slow chunk falls behind."""
        earliest = self.joiner.chunk
        if earliest < self.started and earliest not in self.running:
            # Its call has ended: what is still wanted of it is the frames it shares with the
            # next chunk, which wait for that one to start (one at a time, it never would).
            earliest += 1
        while (
            self.started < len(self.chunks)
            and len(self.running) < self.concurrency
            and self.started < earliest + self.concurrency
        ):
            chunk = self.chunks[self.started]
            self.running.add(chunk.index)
            self.started += 1
            yield chunk

    def announce(self) -> Iterator[VideoProgress]:
        """The bar's total, once, when the first calls are on their way."""
        if not self.announced:
            self.announced = True
            yield self.progress.update(self.chunks[0], 0)

    def receive(self, message: _Message) -> Iterator[VideoEvent]:
        """The events ``message`` makes (it raises a chunk's error)."""
        if message.error is not None:
            raise message.error
        if message.frame is not None:
            self.joiner.add(message.chunk, message.frame.index, message.frame.image.data)
            yield from self.joiner.ready()
        elif message.progress is not None:
            yield self.progress.update(message.chunk, message.progress)
        elif message.result is not None:
            self.running.discard(message.chunk.index)
            self.results.append(message.result)

    def result(self) -> VideoResult:
        ordered = tuple(sorted(self.results, key=lambda r: r.chunk.index))
        return VideoResult(self.joiner.next, ordered[0].width, ordered[0].height, ordered)


def run_video(
    call: VideoCall,
    frames: Iterable[bytes],
    chunks: tuple[Chunk, ...],
    concurrency: int,
) -> Generator[VideoEvent, None, None]:
    """Stylises ``chunks`` of ``frames`` (encoded pictures in order), ``concurrency`` calls at
    once, and yields progress and the frames in order, then the VideoResult. Leaving early or
    a failed chunk cancels every call in flight."""
    clip = _Clip(call, frames, chunks, concurrency)
    out: queue.Queue[_Message] = queue.Queue()
    pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="styleserve-video")
    try:
        while not clip.done:
            for chunk in clip.to_start():
                # In the caller's context, whose trace a style registered again carries.
                run = contextvars.copy_context().run
                pool.submit(run, call.run, chunk, clip.source.take(chunk), out)
            yield from clip.announce()
            yield from clip.receive(out.get())
        yield clip.result()
    finally:
        # Nothing is in flight after the last result; otherwise the caller left early or a
        # chunk failed, and every other call stops now.
        call.in_flight.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


async def run_video_async(
    call: AsyncVideoCall,
    frames: Iterable[bytes],
    chunks: tuple[Chunk, ...],
    concurrency: int,
) -> AsyncGenerator[VideoEvent, None]:
    """``run_video`` on the event loop: each chunk's call a task, the clip's frames read (and
    decoded, for a file) on a worker thread."""
    clip = _Clip(call, frames, chunks, concurrency)
    out: asyncio.Queue[_Message] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not clip.done:
            for chunk in clip.to_start():
                taken = await asyncio.to_thread(clip.source.take, chunk)
                tasks.add(asyncio.create_task(call.run(chunk, taken, out)))
            for announced in clip.announce():
                yield announced
            for event in clip.receive(await out.get()):
                yield event
        yield clip.result()
    finally:
        # As run_video's: every call still in flight stops now.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def video_job(
    styles: Styles | None,
    style_id: str | None,
    request_id: str | None,
    options: Mapping[str, Any],
    server: ServerInfo,
) -> pb.StyleTransferRequest:
    """The job every chunk runs (VideoStart.job), built and checked as a picture's request is;
    its content stays unset: the frames are the content. Its output quality is the ``server``'s
    default where ``options`` leave it, said in the job: the joins' cross-faded frames are
    encoded at it too (``Joiner``)."""
    # A placeholder picture: build_request checks everything but the content, cleared below.
    job = build_request(
        b"",
        styles,
        init_image=None,
        request_id=request_id,
        options=options,
        style_id=style_id,
        video=True,
    )
    job.ClearField("content")
    if not job.delivery.output_quality:
        quality = server.default_delivery.get("output_quality", StyleOptions().output_quality)
        job.delivery.output_quality = quality
    return job


def video_method(job: pb.StyleTransferRequest) -> str:
    """The tier that runs a clip's ``job`` (StyleOptions.method): whose slots its chunks fill."""
    return "feed_forward" if job.options.method == pb.METHOD_FEED_FORWARD else "optimization"


def clip_frames(
    video: str | os.PathLike[str] | VideoClip | Sequence[Picture],
    fps: float | None,
    limits: ServerLimits,
) -> tuple[Iterable[bytes], int, float]:
    """The encoded frames of ``video`` (a file, an opened clip, or pictures in order at
    ``fps``), how many and their rate, checked against the server's ``limits``."""
    if isinstance(video, (str, os.PathLike)):
        video = open_video(video)
    if isinstance(video, VideoClip):
        video.info.check_limits(limits)
        frames = (video.encode_frame(image) for image in video.frames())
        return frames, video.info.frame_count, float(video.info.fps)
    if fps is None or not 0 < fps:
        raise InvalidArgument(f"fps: give the frame rate of the pictures, got {fps!r}")
    if limits.max_video_fps and fps > limits.max_video_fps:
        raise VideoError(
            f"fps: {fps:g} is over the server's limit of {limits.max_video_fps}", reason="limits"
        )
    if not video:
        raise VideoError("the clip has no frames", reason="no_frames")
    pictures = list(video)
    return (encode_picture(p, what="frame") for p in pictures), len(pictures), float(fps)
