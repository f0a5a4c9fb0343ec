"""StylizeVideo: a clip's frames in, stylised frames out, never reading further ahead than the
caller reads the answers.

A call is one job: its VideoStart is checked once (the job's options and styles as
StyleTransfer checks them, with the first frame as its content, which also gives the frames'
size, the iterations Started reports and the memory its slot holds), it queues for one slot of
its tier, and a worker thread runs ``engine.run_video`` over the frames for the whole call.
Frames reach the worker through a hand-off the event loop fills: the reader takes the next
frame from the stream only while fewer than ``max_frames_in_flight`` frames are read and not
yet answered (written to the stream), so a caller that stops reading its answers stops the
reading of its frames (gRPC's flow control then stops its sending), and the server holds at
most that many frames and their answers. Each frame is checked as it arrives (its index, its
picture, the first frame's size); a stream that ends early or runs past ``frame_count`` is
INVALID_ARGUMENT, and the VideoResult follows the end of the caller's stream. A cancelled call
stops the worker within one iteration (the instant tier: one frame) and its slot frees when
the worker has let go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import grpc
from PIL import Image
from styleserve.convert import request_field
from styleserve.options import Limits, OptionsError, check_request_id, check_video, shown
from styleserve.plan import video_iterations
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_export.artifact import Backbone

from styleserve_server import inputs, logs, outputs, streams
from styleserve_server.admission import Admission
from styleserve_server.engine import (
    FeedForward,
    FrameDone,
    Iterate,
    JobCancelled,
    Losses,
    PrecisionChoice,
    VideoDone,
    run_video,
)
from styleserve_server.metrics import Metrics
from styleserve_server.status import NoFeedForward
from styleserve_server.tracing import Tracing
from styleserve_server.uploads import UnknownUpload
from styleserve_server.workers import Handoff, Workers

__all__ = ["VideoHost", "stylize_video"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a worker waiting for its next frame looks at its cancel event.
_POLL_SECONDS = 0.05
# The job fields a video leaves unset: its frames are the content.
_NOT_FOR_VIDEO = ("content", "init_image", "regions")


@dataclass(frozen=True)
class VideoHost:
    """What a StylizeVideo call uses of the service that serves it."""

    limits: Limits
    backbone: Backbone
    feed_forward: FeedForward | None
    precision: PrecisionChoice | None
    device: str
    tile_pixels: int
    metrics: Metrics
    # The service's check of a job (options, styles, the registered style, memory).
    check: Callable[[pb.StyleTransferRequest], inputs.CheckedRequest]
    uploads: inputs.Uploads
    # (admission, executor) of the optimisation and of the instant tier.
    optimisation: tuple[Admission, Executor]
    instant: tuple[Admission, Executor]
    # Where the call's work runs, on its slot, stoppable at the end of a drain's grace.
    workers: Workers
    provenance: outputs.Provenance
    tracing: Tracing


@dataclass(frozen=True)
class _Encoded:
    """A stylised frame with its picture encoded (in the worker, off the event loop)."""

    index: int
    data: bytes
    losses: Losses
    consistent_fraction: float


_Record = Iterate | _Encoded | VideoDone


class _Records(Handoff):
    """The worker's records for the stream, in order, and the error that ends them (the
    first one: a refusal from the reader beats the cancellation it causes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        # Bounded by the frames in flight: the worker waits for frames the reader holds back.
        self._records: collections.deque[_Record] = collections.deque()
        self._error: BaseException | None = None

    def put(self, record: _Record | BaseException) -> None:
        """From the worker or the event loop."""
        with self._lock:
            if isinstance(record, BaseException):
                self._error = self._error or record
            else:
                self._records.append(record)
        self._notify()

    def raise_error(self) -> None:
        """Raises the error that ended the records, if one did."""
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    async def take(self) -> list[_Record]:
        """The records since the last call; raises the error once they are out."""
        await self._wake.wait()
        with self._lock:
            self._wake.clear()
            records = list(self._records)
            self._records.clear()
            error = self._error
        if error is not None and not records:
            raise error
        if error is not None:
            self._wake.set()
        return records


def _check_start(start: pb.VideoStart, limits: Limits) -> None:
    """What a VideoStart asks beyond its job's options and styles."""
    for name in _NOT_FOR_VIDEO:
        if start.job.HasField(name):
            raise OptionsError(f"start.job.{name}", "must be unset: the frames are the content")
    if start.job.detachable:
        raise OptionsError(
            "start.job.detachable",
            "must be false: a video's frames come with its call, which cannot be left; send a "
            "long clip as several calls (chunks) instead",
        )
    try:
        check_request_id(start.job.request_id)
    except OptionsError as error:
        raise OptionsError("start.job.request_id", error.message) from None
    count, most = start.frame_count, limits.max_video_frames
    if not 1 <= count <= most:
        raise OptionsError(
            "start.frame_count",
            f"must be 1 to {most} (limits.max_video_frames), got {count}; send a longer clip "
            "as several calls",
        )
    fps, fastest = start.frames_per_second, limits.max_video_fps
    if not (math.isfinite(fps) and 0 < fps <= fastest):
        raise OptionsError(
            "start.frames_per_second",
            f"must be above 0 and at most {fastest} (limits.max_video_fps), got {shown(fps)}",
        )


def _job_field(error: OptionsError) -> OptionsError:
    """A refusal of the job built from the start and the first frame, naming the field the
    caller sent: the content is frames[0]'s picture, the rest is the start's job."""
    field = error.field
    if field == "content" or field.startswith("content."):
        field = "frames[0].image" + field.removeprefix("content")
    else:
        field = f"start.job.{field}"
    return OptionsError(field, error.message)


async def _message(
    messages: AsyncIterator[pb.StylizeVideoRequest], index: int, count: int
) -> pb.VideoFrame:
    """Frame ``index`` of ``count`` from the stream."""
    message = await anext(messages, None)
    if message is None:
        raise OptionsError(
            "frames",
            f"the stream ended after {index} of the {count} frames its start announced "
            "(start.frame_count)",
        )
    if message.WhichOneof("part") != "frame":
        raise OptionsError(f"frames[{index}]", "every message after the start is a VideoFrame")
    if message.frame.index != index:
        raise OptionsError(
            f"frames[{index}].index",
            f"is {message.frame.index}; frames come in order without gaps: expected {index}",
        )
    return message.frame


@dataclass
class _Call:
    """One StylizeVideo call's state on the event loop."""

    host: VideoHost
    # The call's write, bounded in time (``streams.paced_write``).
    write: Callable[[pb.StylizeVideoResponse], Awaitable[None]]
    messages: AsyncIterator[pb.StylizeVideoRequest]
    start: pb.VideoStart
    checked: inputs.CheckedRequest
    size: tuple[int, int]
    # Frames read and not yet answered, at most max_frames_in_flight: acquired before reading
    # a frame (waiting while that many are out), released after writing one's answer.
    window: asyncio.Semaphore
    frames: queue.Queue[bytes]
    records: _Records
    # Frames read (the first before the call's slot) and answered; set while they are equal,
    # when the caller owes the server its next message.
    read_count: int = 1
    answered: int = 0
    caught_up: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return self.start.frame_count

    def answer_written(self) -> None:
        self.answered += 1
        self.window.release()
        if self.answered == self.read_count:
            self.caught_up.set()

    async def _owed(self, step: Awaitable[T]) -> T:
        """``step`` (a wait on the caller's next message), bounded by stream_idle_seconds
        counted from when every frame it sent is answered: until then the server owes it."""
        seconds = self.host.limits.stream_idle_seconds
        pending = asyncio.ensure_future(step)
        try:
            caught_up = asyncio.ensure_future(self.caught_up.wait())
            try:
                await asyncio.wait({pending, caught_up}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                caught_up.cancel()
            # Caught up, no frame is read meanwhile: it stays so until this message comes.
            return await streams.within(asyncio.shield(pending), seconds, "this call's next frame")
        finally:
            pending.cancel()

    async def read(self) -> None:
        """Reads frames 1 onwards into the hand-off while the window allows, then the end of
        the stream (a message past the last frame is refused); a refusal ends the call."""
        host = self.host
        try:
            for index in range(1, self.count):
                await self.window.acquire()
                frame = await self._owed(_message(self.messages, index, self.count))
                self.read_count += 1
                self.caught_up.clear()
                field = f"frames[{index}].image"
                data, size = await asyncio.to_thread(
                    inputs.check_frame, field, frame.image, host.limits, host.uploads
                )
                if size != self.size:
                    raise OptionsError(
                        field,
                        f"is {size[0]}x{size[1]}; every frame of a call has the first frame's "
                        f"size ({self.size[0]}x{self.size[1]})",
                    )
                self.frames.put(data)
            if await self._owed(anext(self.messages, None)) is not None:
                raise OptionsError(
                    "frames",
                    f"the stream sent more than the {self.count} frames its start announced "
                    "(start.frame_count)",
                )
        except Exception as error:  # noqa: BLE001 - ends the call, through the records
            self.records.put(error)

    def decoded(self, cancel: threading.Event) -> Iterator[Image.Image]:
        """The frames in the worker, decoded, as the reader hands them over (the first is
        the checked job's content)."""
        limits = self.host.limits
        yield inputs.decode("frames[0].image", self.checked.content, limits)
        for index in range(1, self.count):
            while True:
                if cancel.is_set():
                    raise JobCancelled("the video was cancelled")
                try:
                    data = self.frames.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    continue
                break
            yield inputs.decode(f"frames[{index}].image", data, limits)

    def work(self, cancel: threading.Event) -> str:
        """The whole video in the worker thread; returns its outcome."""
        host, checked = self.host, self.checked
        options = checked.options
        instant = options.method == "feed_forward"
        frames = host.metrics.video_frames.labels(options.method)
        phases = host.tracing.phases()
        phases.enter("setup")
        try:
            styles = [
                inputs.decode(f"start.job.styles[{i}]", s, host.limits)
                for i, s in enumerate(checked.styles)
            ]
            phases.enter("frame", 0)
            for record in run_video(
                self.decoded(cancel),
                styles,
                options,
                backbone=None if instant else host.backbone,
                feed_forward=host.feed_forward,
                style=checked.style,
                cancel=cancel,
                precision=host.precision,
                tile_pixels=host.tile_pixels,
            ):
                if isinstance(record, FrameDone):
                    data = outputs.encode(record.image, options)
                    frames.inc()
                    self.records.put(
                        _Encoded(record.index, data, record.losses, record.consistent_fraction)
                    )
                    if record.index + 1 < self.count:
                        phases.enter("frame", record.index + 1)
                    else:
                        phases.end()
                    continue
                if isinstance(record, Iterate):
                    host.metrics.iterations.inc()
                self.records.put(record)
        except JobCancelled as error:
            phases.end(error)
            self.records.put(error)
            return "cancelled"
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which re-raises
            phases.end(error)
            self.records.put(error)
            return "failed"
        return "finished"

    async def relay(
        self,
        reader: asyncio.Task[None],
        worker: asyncio.Future[str],
        total: int,
        started: float,
        queue_seconds: float,
    ) -> None:
        """Writes the worker's records until the VideoResult, which waits for the end of the
        caller's stream (``reader``) and for the ``worker`` to let go of its slot (so that
        the caller's next call finds it free); raises what ended them otherwise."""
        options = self.checked.options
        iteration = frames_done = 0
        while True:
            for record in await self.records.take():
                if isinstance(record, VideoDone):
                    await reader
                    self.records.raise_error()
                    # Shielded: cancelling the wait must not cancel the bookkeeping of a
                    # thread that is still finishing.
                    await asyncio.shield(worker)
                    response = outputs.video_result(
                        record, options, self.host.provenance, self.host.device, queue_seconds
                    )
                    await self.write(response)
                    return
                if isinstance(record, Iterate):
                    iteration += 1
                else:
                    await self.write(
                        outputs.video_frame(
                            record.index, record.data, record.losses, record.consistent_fraction
                        )
                    )
                    self.answer_written()
                    frames_done += 1
                await self.write(
                    self._progress(frames_done, iteration, total, time.monotonic() - started)
                )

    def _progress(
        self, frames_done: int, iteration: int, total: int, elapsed: float
    ) -> pb.StylizeVideoResponse:
        """Where the call stands; the time left extrapolated from the iterations (the instant
        tier: the frames) done so far."""
        count = self.count
        if total:
            left = elapsed / iteration * (total - iteration) if iteration else 0.0
        else:
            left = elapsed / frames_done * (count - frames_done) if frames_done else 0.0
        return pb.StylizeVideoResponse(
            progress=pb.VideoProgress(
                frames_done=frames_done,
                frame_count=count,
                iteration=iteration,
                total_iterations=total,
                elapsed_seconds=elapsed,
                eta_seconds=left,
            )
        )


async def _first_frame(
    host: VideoHost, messages: AsyncIterator[pb.StylizeVideoRequest], start: pb.VideoStart
) -> tuple[inputs.CheckedRequest, tuple[int, int]]:
    """The job of ``start`` checked with the first frame as its content, and the frames' size."""
    seconds = host.limits.stream_idle_seconds
    frame = await streams.within(
        _message(messages, 0, start.frame_count), seconds, "this call's first frame"
    )
    job = pb.StyleTransferRequest()
    job.CopyFrom(start.job)
    job.content.CopyFrom(frame.image)
    try:
        checked = await asyncio.to_thread(host.check, job)
    except OptionsError as error:
        raise _job_field(error) from None
    except UnknownUpload as error:
        if error.field != "content":
            raise
        raise UnknownUpload("frames[0].image", frame.image.upload_id) from None
    options = checked.options
    try:
        check_video(options)
    except OptionsError as error:
        raise _job_field(OptionsError(request_field(error.field), error.message)) from None
    instant = options.method == "feed_forward"
    if host.feed_forward is None and (instant or options.init == "feed_forward"):
        raise NoFeedForward("start.job.options." + ("method" if instant else "init"))
    # Previews do not apply: a frame's answer is its picture.
    checked = dataclasses.replace(checked, options=options.replace(preview_every=0))
    # The check read the first frame as the content and its size from its header.
    return checked, checked.content_size


async def stylize_video(
    host: VideoHost,
    messages: AsyncIterator[pb.StylizeVideoRequest],
    context: grpc.aio.ServicerContext,
    send_headers: Callable[[str], Awaitable[None]],
) -> None:
    """The body of a StylizeVideo call (the service's frame maps what it raises to a status)."""
    seconds = host.limits.stream_idle_seconds
    first = await streams.within(anext(messages, None), seconds, "this call's start")
    if first is None or first.WhichOneof("part") != "start":
        raise OptionsError("start", "the first message of a StylizeVideo call is a VideoStart")
    start = first.start
    _check_start(start, host.limits)
    if start.job.request_id:
        # The job's request id names the call, as a StyleTransfer request's does: its log
        # lines, its headers and its receipt.
        logs.request_id.set(start.job.request_id)
        provenance = dataclasses.replace(host.provenance, request_id=start.job.request_id)
        host = dataclasses.replace(host, provenance=provenance)
    # One frame is read before the call queues: its size decides the plan and the memory.
    # A caller that stops reading stops the reading of its frames, and so its job, in its slot.
    write = streams.paced_write(context.write, seconds)
    window = asyncio.Semaphore(host.limits.max_frames_in_flight)
    await window.acquire()
    checked, size = await _first_frame(host, messages, start)
    options = checked.options
    total = video_iterations(size, options, start.frame_count)
    request_id = host.provenance.request_id
    host.tracing.describe(request_id, checked, "", frames=start.frame_count, iterations=total)
    admission, executor = host.instant if options.method == "feed_forward" else host.optimisation
    enqueued = time.monotonic()
    with host.tracing.span("queue"):
        async with contextlib.aclosing(admission.wait(checked.memory_bytes)) as positions:
            position = await anext(positions)
            await send_headers(host.provenance.request_id)
            await write(pb.StylizeVideoResponse(queued=outputs.queued(position).queued))
            async for position in positions:
                queued = outputs.queued(position).queued
                await write(pb.StylizeVideoResponse(queued=queued))
    # A slot is held from here: the worker's end releases it, with no await between.
    queue_seconds = time.monotonic() - enqueued
    host.metrics.queue_wait.observe(queue_seconds)
    call = _Call(
        host,
        write,
        messages,
        start,
        checked,
        size,
        window,
        queue.Queue(),
        _Records(asyncio.get_running_loop()),
    )
    cancel = threading.Event()
    began = time.monotonic()
    future = host.workers.start_job(
        functools.partial(call.work, cancel),
        cancel,
        executor=executor,
        admission=admission,
        nbytes=checked.memory_bytes,
    )
    log.info(
        "video started",
        extra={"frames": start.frame_count, "method": options.method, "size": options.size},
    )
    reader = asyncio.create_task(call.read())
    try:
        started = outputs.started(queue_seconds, host.device, total).started
        await write(pb.StylizeVideoResponse(started=started))
        await call.relay(reader, future, total, began, queue_seconds)
    finally:
        cancel.set()
        reader.cancel()
    log.info("video finished", extra={"frames": start.frame_count})
