"""The gRPC servicer: turns calls into admitted jobs and job records into stream events.

Each call gets a request id (the caller's, or a fresh one) carried by every log line (its token
was checked before its request was read: ``access``), is checked before it may queue, waits
for a slot while hearing its queue position, and then relays its job's records. Whatever ends
a call, one place maps it to a status code, logs it and counts it, and a cancelled or timed-out
call stops its job (the slot frees when the worker has really let go). Feed-forward (instant)
jobs have slots, a queue and worker threads of their own, so that they never wait behind an
optimisation that takes minutes. RegisterStyle prepares a style once (``style_cache``) for the
jobs that name its id or send its pictures again, in a job slot like a job: it queues, a cancel
or the end of a drain's grace stops it, and a refused or stopped registration stores nothing.
Unless the caller asks for the strict policy, a job stops in time for its time budget (counted
from its slot) and for its call's deadline (counted by the caller, queue included), whichever
comes first, and ends with its best picture so far. UploadPicture streams a picture larger than
a request into the store of uploads (``uploads``), whose ids requests name instead of bytes; a
result larger than the caller's largest message leaves in chunks (``outputs.delivered``).
google.longrunning.Operations (``operations``) looks up, lists and cancels the caller's
detachable jobs, in the same frame as every other call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
import torch
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from styleserve.options import PRESETS, OptionsError, StyleOptions, check_request_id
from styleserve.plan import Stage
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_export.artifact import Backbone

from styleserve_server import inputs, logs, outputs, streams, video, wire
from styleserve_server.access import caller_identity
from styleserve_server.admission import Admission, MemoryPool, ShuttingDown
from styleserve_server.engine import (
    TEMPORAL_BYTES,
    FeedForward,
    Finished,
    Iterate,
    PrecisionChoice,
    StopAt,
    expected_job_seconds,
    job_precision,
    predicted_peak_bytes,
    prepare_style,
    registration_peak_bytes,
    registration_stages,
    targets_nbytes,
)
from styleserve_server.job_store import JobStore, KeptJob, Send, StartedMeanwhile
from styleserve_server.jobs import FirstPicture, Job, OutOfTime, run_instant
from styleserve_server.memory import check_fits, measured_budget
from styleserve_server.metrics import Metrics
from styleserve_server.operations import OPERATIONS_SERVICE, Handle, JobOperations
from styleserve_server.server_info import server_info, version
from styleserve_server.settings import Settings
from styleserve_server.status import (
    NoFeedForward,
    NotComputed,
    NotReady,
    clear_frames,
    ended_by_caller,
    status,
)
from styleserve_server.style_cache import StyleCache
from styleserve_server.tracing import Tracing
from styleserve_server.uploads import UploadStore
from styleserve_server.workers import Workers

__all__ = ["StyleTransferService", "add_to_server"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _stop_at(options: StyleOptions, remaining: float | None) -> StopAt | None:
    """When a job that has just got its slot must have sent its result: at the end of its time
    budget or at the call's deadline (``remaining`` seconds away; None: no deadline), whichever
    comes first. None under the strict policy, which runs every iteration or fails."""
    if options.deadline_policy == "strict":
        return None
    now = time.perf_counter()
    stops = []
    if options.time_budget_seconds > 0:
        stops.append(StopAt(now + options.time_budget_seconds, "time_budget"))
    if remaining is not None:
        stops.append(StopAt(now + remaining, "deadline"))
    return min(stops, key=lambda stop: stop.at, default=None)


class _Write:
    """Writes a job's events to its own call, numbered (``outputs.Numbering``)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.numbering = outputs.Numbering()

    async def __call__(self, message: pb.StyleTransferResponse) -> None:
        await self.context.write(self.numbering(message))


async def _send_headers(context: grpc.aio.ServicerContext, request_id: str) -> None:
    """Sends the headers of an accepted call: they carry its request id."""
    await context.send_initial_metadata((("x-request-id", request_id),))


class StyleTransferService(pb_grpc.StyleTransferServiceServicer):
    """Serves StyleTransfer, StylizeVideo (``video``), RegisterStyle, UploadPicture,
    GetServerInfo and WatchJob once ``serve`` has handed it a backbone, and
    google.longrunning.Operations over its detachable jobs (``operation``)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        executor: Executor,
        instant_executor: Executor,
        tracing: Tracing,
    ) -> None:
        self._settings = settings
        self._tracing = tracing
        self._limits = settings.limits()
        self._metrics = metrics
        self._executor = executor
        self._instant_executor = instant_executor
        # Both tiers' jobs count against one budget, measured when the weights are in (serve).
        self._memory = MemoryPool(settings.memory_budget_bytes)
        self._admission = Admission(
            settings.job_slots, settings.queue_size, metrics.admission_changed, self._memory
        )
        self._instant = Admission(
            settings.feed_forward_slots,
            settings.feed_forward_queue_size,
            metrics.instant_admission_changed,
            self._memory,
        )
        self._styles = StyleCache(settings.style_cache_bytes, self._limits, metrics)
        self._uploads = UploadStore(
            settings.upload_store_bytes,
            settings.max_upload_bytes,
            settings.upload_expire_seconds,
            metrics,
        )
        self._jobs = JobStore(
            settings.job_store_bytes,
            settings.detach_grace_seconds,
            settings.job_retention_seconds,
            metrics,
        )
        self._operations = JobOperations(self._jobs)
        self._backbone: Backbone | None = None
        self._feed_forward: FeedForward | None = None
        self._precision: PrecisionChoice | None = None
        self._device = ""
        self._draining = False
        self._workers = Workers(metrics)

    def serve(
        self, backbone: Backbone, feed_forward: FeedForward | None, precision: PrecisionChoice
    ) -> None:
        """Starts accepting jobs for ``backbone`` and the instant tier ``feed_forward`` (None:
        none), loaded and warmed up; ``precision`` is what "auto" was measured to mean."""
        # The loader names CUDA devices with their index ("cuda:0"), as receipts should.
        self._device = str(backbone.device)
        settings = self._settings
        stores = settings.upload_store_bytes + settings.style_cache_bytes + settings.job_store_bytes
        budget = settings.memory_budget_bytes or measured_budget(backbone.device, stores)
        if not settings.memory_budget_bytes and budget < stores:
            # Every job whose peak is over what is left gets RESOURCE_EXHAUSTED: say why here.
            log.warning(
                "the measured memory budget of the jobs is %.2f GiB, less than the in-memory "
                "stores may hold (%.2f GiB): lower upload_store_bytes, style_cache_bytes or "
                "job_store_bytes, set memory_budget_bytes, or give the server more memory",
                budget / 2**30,
                stores / 2**30,
            )
        self._memory.budget = budget
        self._limits = dataclasses.replace(self._limits, memory_budget_bytes=budget)
        self._feed_forward = feed_forward
        self._precision = precision
        # The first retry hint comes from a measured job time, before any job has finished.
        expected = expected_job_seconds(precision, PRESETS["default"])
        if expected is not None:
            self._admission.expect(expected)
        self._backbone = backbone

    def drain(self) -> None:
        """Refuses new jobs and turns queued ones away; running jobs go on."""
        self._draining = True
        self._admission.close()
        self._instant.close()

    def stop_jobs(self) -> None:
        """The grace period is over: running jobs stop within an iteration and their calls
        end UNAVAILABLE, the status the clients see and the server logs and counts alike."""
        self._workers.stop_all()

    async def idle(self) -> None:
        """Returns when no job is running."""
        await asyncio.gather(self._admission.idle(), self._instant.idle())

    @property
    def running(self) -> int:
        """The jobs running now, in both tiers."""
        return self._admission.running + self._instant.running

    def close(self) -> None:
        """Ends what outlives calls (the server is stopping): the kept detachable jobs, whose
        watchers get UNAVAILABLE."""
        self._jobs.close()

    async def _style_transfer(
        self, request: pb.StyleTransferRequest, context: grpc.aio.ServicerContext, request_id: str
    ) -> None:
        backbone = self._serving()
        if request.detachable:
            sent = self._jobs.resubmitted(self._owner(context), request_id)
            if sent is not None:
                # This request, sent again (job_store): its job, not a second one.
                self._metrics.jobs_resubmitted.inc()
                log.info("request sent again: following its job", extra={"job_id": sent.job_id})
                await _send_headers(context, request_id)
                await self._jobs.follow(sent, 0, context.write, own=True)
                return
        kept: KeptJob | None = None
        if request.detachable:
            # Refused before the request's check (which may decode its regions) when the
            # server keeps no jobs; bound to the caller before any await can lose it.
            kept = self._jobs.open(self._owner(context), request_id)
        message_bytes = outputs.message_bytes(request.delivery.max_message_bytes)
        checked = await asyncio.to_thread(self._check, request, backbone)
        options = checked.options
        instant = options.method == "feed_forward"
        if self._feed_forward is None and (instant or options.init == "feed_forward"):
            raise NoFeedForward("options.method" if instant else "options.init")
        self._tracing.describe(request_id, checked, "" if kept is None else kept.job_id)
        admission = self._instant if instant else self._admission
        write = _Write(context)
        enqueued = time.monotonic()
        with self._tracing.span("queue"):
            async with contextlib.aclosing(admission.wait(checked.memory_bytes)) as positions:
                # A full queue or a drain refuses the call before its first position.
                first = await anext(positions)
                await _send_headers(context, request_id)
                await write(outputs.queued(first))
                async for position in positions:
                    await write(outputs.queued(position))
        # A slot is held from here: the job's completion releases it, with no await between.
        if kept is not None and self._jobs.resubmitted(kept.owner, request_id) is not None:
            # The same request, sent before, started while this one queued: this call has
            # numbered events of its own already, so the caller is sent back to that job.
            admission.release(nbytes=checked.memory_bytes)
            raise StartedMeanwhile
        queue_seconds = time.monotonic() - enqueued
        provenance = self._provenance(backbone, request_id)
        if instant:
            produce = functools.partial(
                self._run_instant, checked, provenance, queue_seconds, message_bytes
            )
            await self._deliver(produce, 0, queue_seconds, kept, write)
            return
        stop = _stop_at(options, context.time_remaining())
        job = self._start(checked, backbone, queue_seconds, stop)
        produce = functools.partial(
            self._run_job, job, checked, provenance, queue_seconds, message_bytes
        )
        await self._deliver(produce, checked.total_iterations, queue_seconds, kept, write)

    async def _deliver(
        self,
        produce: Callable[[pb.StyleTransferResponse, Send], Awaitable[None]],
        total: int,
        queue_seconds: float,
        kept: KeptJob | None,
        write: _Write,
    ) -> None:
        """Runs ``produce(started, send)``, which makes a job's events from its Started on:
        straight into the call (``write`` numbers them), or, for a detachable job (``kept``),
        into the job store in a task of its own, which the call then follows as a watcher."""
        if kept is None:
            await produce(outputs.started(queue_seconds, self._device, total), write)
            return
        replica = self._settings.advertise_address
        started = outputs.started(queue_seconds, self._device, total, kept.job_id, replica)
        seen = write.numbering.last

        async def numbered(send: Send) -> None:
            try:
                await produce(started, lambda message: send(write.numbering(message)))
            except Exception as error:
                # A detached job's failure may reach nobody's call, which is where failures
                # are logged; its status (GetOperation, a watch) names this request's lines.
                # A call that follows the job gets the error and logs it itself.
                if not kept.watchers and status(error)[0] is grpc.StatusCode.INTERNAL:
                    log.exception("detachable job failed", extra={"job_id": kept.job_id})
                raise

        self._jobs.run(kept, numbered)
        await self._jobs.follow(kept, seen, write.context.write, own=True)

    async def _run_job(
        self,
        job: Job,
        checked: inputs.CheckedRequest,
        provenance: outputs.Provenance,
        queue_seconds: float,
        message_bytes: int,
        started: pb.StyleTransferResponse,
        send: Send,
    ) -> None:
        """An optimisation job's events, through ``send``, from ``started`` to its result; the
        job stops when this ends, however it ends."""
        try:
            # Started as soon as the slot is granted: the caller learns the job's length
            # before its first iteration.
            await send(started)
            await self._relay(job, checked, provenance, queue_seconds, message_bytes, send)
        finally:
            job.cancel.set()

    def _provenance(self, backbone: Backbone, request_id: str) -> outputs.Provenance:
        return outputs.Provenance(
            backbone=backbone.name,
            weights_sha256=backbone.sha256,
            server_version=version(),
            torch_version=torch.__version__,
            request_id=request_id,
            feed_forward=self._feed_forward,
        )

    async def _stylize_video(
        self,
        messages: AsyncIterator[pb.StylizeVideoRequest],
        context: grpc.aio.ServicerContext,
        request_id: str,
    ) -> None:
        backbone = self._serving()
        host = video.VideoHost(
            limits=self._limits,
            backbone=backbone,
            feed_forward=self._feed_forward,
            precision=self._precision,
            device=self._device,
            tile_pixels=self._settings.tile_pixels,
            metrics=self._metrics,
            check=functools.partial(self._check, backbone=backbone, video=True),
            uploads=self._uploads.get,
            optimisation=(self._admission, self._executor),
            instant=(self._instant, self._instant_executor),
            workers=self._workers,
            provenance=self._provenance(backbone, request_id),
            tracing=self._tracing,
        )
        send_headers = functools.partial(_send_headers, context)
        await video.stylize_video(host, messages, context, send_headers)

    def _check(
        self, request: pb.StyleTransferRequest, backbone: Backbone, *, video: bool = False
    ) -> inputs.CheckedRequest:
        """``request`` checked, with the registered style that stands for its pictures (the
        one it names, or the one its pictures are) and its predicted peak memory, which must
        fit the budget (else TooBig, naming the size that would); a ``video``'s job (its
        first frame the content) counts its frames' temporal state too."""
        style_id = inputs.style_id(request)
        entry = self._styles.get(style_id) if style_id else None
        checked = inputs.check(
            request,
            self._limits,
            backbone=backbone.name,
            preview_size=self._settings.preview_size,
            output_quality=self._settings.output_quality,
            registered=None if entry is None else entry.registration,
            uploads=self._uploads.get,
        )
        if entry is None:
            entry = self._styles.find(checked.styles, checked.options, backbone.sha256)
        if entry is not None:
            pixels = entry.registration.picture_pixels
            checked = dataclasses.replace(checked, styles=(), style=entry, style_pixels=pixels)
        options = checked.options
        # An instant job runs no network: its precision is neither resolved nor refused.
        precision = None if options.method == "feed_forward" else self._network_precision(options)
        peak = functools.partial(self._peak, checked, precision, video=video)
        smallest = self._limits.min_output_side
        budget = self._memory.budget
        memory = check_fits(checked.stages, options, smallest, peak, budget)
        return dataclasses.replace(checked, memory_bytes=memory)

    def _peak(
        self,
        checked: inputs.CheckedRequest,
        precision: str | None,
        stages: Sequence[Stage],
        *,
        video: bool,
    ) -> int:
        """The predicted peak memory of ``checked``'s job, were it planned as ``stages``: the
        decoding of its pictures, or, with them decoded, its optimisation's (its network in
        ``precision``; None: an instant job, which has none) or the instant tier's picture at
        the output's size (which a job may make too, as a preview, a start or a stand-in),
        and a consistent ``video``'s temporal state at the frames' size beside it."""
        options = checked.options
        painted = 0 if checked.regions is None else checked.regions.count
        output = stages[-1]
        work = (
            0
            if self._feed_forward is None
            else self._feed_forward.peak_bytes(output.width, output.height, max(1, painted))
        )
        if precision is not None:
            sizes = [(stage.width, stage.height) for stage in stages]
            styles = len(checked.styles) if checked.style is None else checked.style.count
            optimisation = predicted_peak_bytes(
                sizes,
                options,
                precision,
                self._settings.tile_pixels,
                regions=painted,
                styles=styles,
            )
            work = max(work, optimisation)
        if not video:
            return inputs.with_pictures(checked.decoded_pixels, work)
        # A frame is decoded while the one before it is held (``engine.run_video``), and with
        # it a consistent clip's temporal state, which the frames' jobs are done beside too.
        frame = checked.decoded_pixels[0]
        held = TEMPORAL_BYTES * output.width * output.height if options.temporal_weight > 0 else 0
        return inputs.with_pictures((frame, *checked.decoded_pixels), work) + held

    def _registration_memory(self, checked: inputs.CheckedStyle) -> int:
        """The predicted peak memory of ``checked``'s registration, which must fit the budget
        (else TooBig, naming the size that would)."""
        options = checked.options
        pixels = checked.picture_pixels
        stages = registration_stages(options)
        if not stages:  # no targets to prepare
            return inputs.with_pictures(pixels)
        precision = self._network_precision(options)

        def peak(planned: Sequence[Stage]) -> int:
            work = registration_peak_bytes(
                [(stage.width, stage.height) for stage in planned],
                options,
                precision,
                self._settings.tile_pixels,
                styles=len(checked.pictures),
            )
            return inputs.with_pictures(pixels, work)

        smallest = self._limits.min_output_side
        return check_fits(stages, options, smallest, peak, self._memory.budget)

    def _network_precision(self, options: StyleOptions) -> str:
        """The precision the network runs ``options``' job in, as the engine decides it (what
        "auto" was measured to mean here, or the one asked for). NotComputed when the one asked
        for was not timed here: the device would emulate it, at many times the time and memory
        admitted for it (``engine.precision``)."""
        assert self._backbone is not None and self._precision is not None, "serve() measured it"
        precision = job_precision(options.precision, self._backbone, self._precision).precision
        if precision not in self._precision.timed:
            raise NotComputed(precision, self._precision.timed)
        return precision

    async def _register_style(
        self, request: pb.RegisterStyleRequest, context: grpc.aio.ServicerContext, request_id: str
    ) -> pb.RegisterStyleResponse:
        backbone = self._serving()
        self._styles.check_on()
        checked = await asyncio.to_thread(
            inputs.check_registration,
            request,
            self._limits,
            backbone=backbone.name,
            uploads=self._uploads.get,
        )
        # The targets' bytes and the work's memory follow from the options: refused before
        # any is computed.
        self._styles.check_room(checked, targets_nbytes(backbone, checked.options))
        nbytes = self._registration_memory(checked)
        self._tracing.describe_registration(request_id, checked)
        # A registration costs forward passes like a job's: it waits for a job slot.
        with self._tracing.span("queue"):
            async with contextlib.aclosing(self._admission.wait(nbytes)) as positions:
                async for _ in positions:
                    pass
        cancel = threading.Event()
        prepare = functools.partial(
            prepare_style,
            backbone=backbone,
            options=checked.options,
            precision=self._precision,
            style_vector=None if self._feed_forward is None else self._feed_forward.styles_vector,
            cancel=cancel,
            tile_pixels=self._settings.tile_pixels,
        )
        work = functools.partial(
            self._tracing.traced,
            "prepare",
            self._styles.register,
            checked,
            backbone.sha256,
            prepare,
        )
        future = self._workers.start(
            work, cancel, self._executor, lambda _: self._admission.release(nbytes=nbytes)
        )
        try:
            # Shielded: a cancelled call stops the work through ``cancel``, and the slot
            # frees when the thread has let go (nothing is stored then).
            entry = await asyncio.shield(future)
        finally:
            cancel.set()
        response = pb.RegisterStyleResponse(style_id=entry.style_id, cached_bytes=entry.nbytes)
        log.info(
            "style registered",
            extra={"style_id": entry.style_id, "cached_bytes": response.cached_bytes},
        )
        await _send_headers(context, request_id)
        return response

    async def _upload_picture(
        self,
        messages: AsyncIterator[pb.UploadPictureRequest],
        context: grpc.aio.ServicerContext,
        request_id: str,
    ) -> pb.UploadPictureResponse:
        self._serving()
        stored = await self._uploads.receive(
            streams.paced(messages, self._limits.stream_idle_seconds)
        )
        log.info(
            "picture uploaded",
            extra={"upload_id": stored.upload_id, "size_bytes": stored.size_bytes},
        )
        await _send_headers(context, request_id)
        return pb.UploadPictureResponse(
            upload_id=stored.upload_id,
            size_bytes=stored.size_bytes,
            expire_seconds=stored.expire_seconds,
        )

    async def _run_instant(
        self,
        checked: inputs.CheckedRequest,
        provenance: outputs.Provenance,
        queue_seconds: float,
        message_bytes: int,
        started: pb.StyleTransferResponse,
        send: Send,
    ) -> None:
        """A feed-forward job: ``started``, then the Result (in messages of at most
        ``message_bytes``), from a slot of the instant tier, through ``send``."""
        feed_forward = self._feed_forward
        assert feed_forward is not None
        began = time.monotonic()
        cancel = threading.Event()

        def work() -> pb.StyleTransferResponse:
            made = run_instant(checked, feed_forward, self._limits, self._tracing, cancel)
            timings = (queue_seconds, made.decode_seconds, made.network_seconds)
            with self._tracing.span("encode"):
                return outputs.instant_result(
                    made.image, checked.options, provenance, self._device, timings
                )

        def release(future: asyncio.Future[pb.StyleTransferResponse] | None) -> None:
            if future is None:
                self._instant.release(nbytes=checked.memory_bytes)
                return
            seconds = time.monotonic() - began
            self._metrics.instant_duration.observe(seconds)
            self._instant.release(seconds, nbytes=checked.memory_bytes)

        future = self._workers.start(work, cancel, self._instant_executor, release)
        # Shielded: a cancelled call must not mark the work done (and its slot free) while
        # the worker thread is still running it; it stops at its next tile (a picture run
        # whole ends with the network's one pass), also when sending Started fails.
        try:
            await send(started)
            response = await asyncio.shield(future)
        except BaseException:
            cancel.set()
            raise
        for message in outputs.delivered(response, message_bytes):
            await send(message)
        log.info("instant job finished", extra={"seconds": round(time.monotonic() - began, 3)})

    def _start(
        self,
        checked: inputs.CheckedRequest,
        backbone: Backbone,
        queue_seconds: float,
        stop: StopAt | None,
    ) -> Job:
        """Starts the job in a worker thread; its slot is released when the thread is done
        (``Workers.start_job``)."""
        self._metrics.queue_wait.observe(queue_seconds)
        options = checked.options
        log.info(
            "job started",
            extra={
                "queue_seconds": round(queue_seconds, 3),
                "preset": options.preset,
                "size": options.size,
                "iterations": options.iterations,
                "styles": len(checked.styles),
            },
        )
        start = functools.partial(
            self._workers.start_job,
            executor=self._executor,
            admission=self._admission,
            nbytes=checked.memory_bytes,
        )
        return Job(
            checked,
            backbone,
            self._limits,
            start,
            self._metrics.iterations.inc,
            feed_forward=self._feed_forward,
            precision=self._precision,
            stop=stop,
            tile_pixels=self._settings.tile_pixels,
            tracing=self._tracing,
        )

    async def _relay(
        self,
        job: Job,
        checked: inputs.CheckedRequest,
        provenance: outputs.Provenance,
        queue_seconds: float,
        message_bytes: int,
        send: Send,
    ) -> None:
        """Sends the job's records until its result, in messages of at most ``message_bytes``
        (or raises its error)."""
        options = checked.options
        first: Iterate | None = None
        while True:
            for record in await job.mailbox.take():
                if isinstance(record, FirstPicture):
                    response = await asyncio.to_thread(outputs.preview, 0, record.preview, options)
                    await send(response)
                    continue
                if isinstance(record, Finished | OutOfTime):
                    # Free the slot before the caller hears of the result, so that its next
                    # job finds the slot free (shielded: cancelling the wait must not cancel
                    # the bookkeeping of a thread that is still finishing).
                    await asyncio.shield(job.future)
                    with self._tracing.span("encode"):
                        response = await asyncio.to_thread(
                            self._result, record, options, provenance, queue_seconds
                        )
                    for message in outputs.delivered(response, message_bytes):
                        await send(message)
                    result = response.result
                    log.info(
                        "job finished",
                        extra={
                            "iterations": result.iterations,
                            "seed": result.receipt.seed,
                            "stop_reason": pb.StopReason.Name(result.stop_reason),
                        },
                    )
                    return
                if first is None:
                    first = record
                if record.preview is not None:
                    response = await asyncio.to_thread(
                        outputs.preview, record.iteration, record.preview, options
                    )
                    await send(response)
                else:
                    await send(outputs.progress(record, first))

    def _result(
        self,
        end: Finished | OutOfTime,
        options: StyleOptions,
        provenance: outputs.Provenance,
        queue_seconds: float,
    ) -> pb.StyleTransferResponse:
        """The Result of a job that ended with ``end`` (encodes it: call it off the event loop)."""
        if isinstance(end, Finished):
            return outputs.result(end, options, provenance, queue_seconds)
        timings = (queue_seconds, end.decode_seconds, end.network_seconds)
        return outputs.instant_result(
            end.image, options, provenance, self._device, timings, end.stop_reason
        )

    async def _server_info(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext, request_id: str
    ) -> pb.GetServerInfoResponse:
        info = server_info(
            self._settings,
            self._limits,
            self._serving(),
            self._feed_forward,
            self._precision,
            self._styles.info(),
            self._uploads.info(),
            self._jobs.info(),
        )
        await _send_headers(context, request_id)
        return info

    async def _watch_job(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext, request_id: str
    ) -> None:
        kept = self._jobs.find(request.job_id, self._owner(context), request.after_sequence)
        self._metrics.jobs_reattached.inc()
        log.info("job watched", extra={"job_id": kept.job_id, "after": request.after_sequence})
        await _send_headers(context, request_id)

        async def send(event: pb.StyleTransferResponse) -> None:
            await context.write(pb.WatchJobResponse(event=event))

        # Not the job's own call: its end (a cancel included) leaves the job running.
        await self._jobs.follow(kept, request.after_sequence, send)

    async def _operation(
        self,
        request: Message,
        context: grpc.aio.ServicerContext,
        request_id: str,
        *,
        handle: Handle,
    ) -> Message:
        """One google.longrunning.Operations call (``operations``), on the caller's jobs."""
        response = await handle(request, self._owner(context), context.time_remaining())
        await _send_headers(context, request_id)
        return response

    def operation(self, name: str) -> Callable[..., Awaitable[Message]]:
        """The gRPC method ``name`` of google.longrunning.Operations, in ``_call``'s frame as
        the methods below are (it takes the request's bytes)."""
        method = OPERATIONS_SERVICE.methods_by_name[name]
        handle = self._operations.handles[name]
        body = functools.partial(StyleTransferService._operation, handle=handle)
        return functools.partial(self._call, name, GetMessageClass(method.input_type), body)

    def _owner(self, context: grpc.aio.ServicerContext) -> str:
        """The caller identity a detachable job is bound to (``access.caller_identity``)."""
        return caller_identity(context, token_checked=self._settings.auth_token is not None)

    def _serving(self) -> Backbone:
        if self._draining:
            raise ShuttingDown
        if self._backbone is None:
            raise NotReady
        return self._backbone

    async def _call(
        self,
        method: str,
        request_type: type[Message],
        body: Callable[[Any, Any, grpc.aio.ServicerContext, str], Awaitable[T]],
        data: bytes | AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> T:
        """One call's frame: its request parsed from ``data`` as ``request_type`` within bounds
        (``wire``; a streamed request's messages each as the body reads them), request id,
        status mapping, logging and metrics around
        ``body(self, request, context, request_id)``, whose result it returns (one translation
        for every error of the servicer). gRPC calls it directly (the methods below are it,
        bound to their bodies), so that it is the only frame of the call's own that holds the
        request.

        The body sends the headers (``_send_headers``) once it accepts the call, not before:
        a call refused without headers ends trailers-only, which gRPC retry policies retry.
        """
        metadata: dict[str, Any] = dict(context.invocation_metadata() or ())
        refused: OptionsError | None = None
        request: Any = None
        if isinstance(data, bytes):
            try:
                request = wire.parse(request_type, data, self._limits)
            except OptionsError as error:
                refused = error
        else:
            request = wire.parse_each(request_type, data, self._limits)
        del data
        asked = getattr(request, "request_id", "") or str(metadata.get("x-request-id", ""))
        try:
            check_request_id(asked)
        except OptionsError as error:
            # Never logged or echoed: the call gets an id of the server's own instead.
            refused, asked = refused or error, ""
        request_id = asked or uuid.uuid4().hex
        token = logs.request_id.set(request_id)
        started = time.monotonic()

        def outcome(code: grpc.StatusCode) -> None:
            self._metrics.requests.labels(method, code.name).inc()
            log.info(
                "%s %s",
                method,
                code.name,
                extra={"code": code.name, "seconds": round(time.monotonic() - started, 3)},
            )

        try:
            if refused is not None:
                raise refused
            result = await body(self, request, context, request_id)
        except asyncio.CancelledError:
            outcome(ended_by_caller(context))
            raise
        except Exception as error:  # noqa: BLE001 - every error becomes a status, here only
            if context.cancelled() or isinstance(error, grpc.aio.InternalError):
                # A write raced the caller's cancel: grpc fails the write's batch, at times
                # before it has marked the call cancelled (grpc's own handlers ignore such a
                # failure once the client has closed). The caller's doing, not the server's
                # failure; the call ends as cancelled calls do.
                outcome(ended_by_caller(context))
                raise asyncio.CancelledError from error
            code, message, trailers = status(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            # Counted and logged before the status leaves, so a caller holding the status
            # finds its log line and its count.
            outcome(code)
            # The frames of a call that ends in an abort outlive it: gRPC keeps the abort on the
            # call's state, which those frames reach again through the context, a cycle that
            # only the garbage collector breaks, late. None may hold the request meanwhile
            # (measured before: 40 refused 16 MB requests left the server 695 MB larger).
            del request
            clear_frames(error)
            # The id the call's lines were logged under (a video's job may name its own).
            named = logs.request_id.get()
            await context.abort(code, message, (*trailers, ("x-request-id", named)))
        else:
            outcome(grpc.StatusCode.OK)
            return result
        finally:
            logs.request_id.reset(token)

    # The gRPC methods, each ``_call`` bound to its request message and body; they take the
    # request's bytes (``add_to_server``).
    StyleTransfer = functools.partialmethod(
        _call, "StyleTransfer", pb.StyleTransferRequest, _style_transfer
    )
    RegisterStyle = functools.partialmethod(
        _call, "RegisterStyle", pb.RegisterStyleRequest, _register_style
    )
    GetServerInfo = functools.partialmethod(
        _call, "GetServerInfo", pb.GetServerInfoRequest, _server_info
    )
    UploadPicture = functools.partialmethod(
        _call, "UploadPicture", pb.UploadPictureRequest, _upload_picture
    )
    StylizeVideo = functools.partialmethod(
        _call, "StylizeVideo", pb.StylizeVideoRequest, _stylize_video
    )
    WatchJob = functools.partialmethod(_call, "WatchJob", pb.WatchJobRequest, _watch_job)


def add_to_server(service: StyleTransferService, server: grpc.aio.Server) -> None:
    """Serves ``service``'s methods on ``server`` as the contract declares them, and
    google.longrunning.Operations beside them, except that each receives its request (each
    message of a streamed one) as bytes, which ``wire`` bounds before protobuf parses them."""
    kinds: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    own = pb.DESCRIPTOR.services_by_name["StyleTransferService"]
    served = ((own, functools.partial(getattr, service)), (OPERATIONS_SERVICE, service.operation))
    for descriptor, method_of in served:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for name, method in descriptor.methods_by_name.items():
            response = GetMessageClass(method.output_type)
            kind = kinds[method.client_streaming, method.server_streaming]
            handlers[name] = kind(
                method_of(name),
                request_deserializer=None,
                response_serializer=response.SerializeToString,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(descriptor.full_name, handlers),)
        )
        server.add_registered_method_handlers(descriptor.full_name, handlers)
