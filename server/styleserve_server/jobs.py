"""Runs an admitted job in a worker thread and hands its records to the stream.

The optimisation must never wait for the network: the worker only ever drops records into a
Mailbox, which never blocks. A slow reader finds several records waiting when it comes back:
every progress record (small, and bounded by the iteration count), only the newest preview
(older ones are stale anyway), and always the end of the job (its result or its error).
Setting the job's cancel event stops the engine within one iteration; the job's future
completes when the worker thread is really done, which is when its slot and memory are free.

Where the server has an instant tier, an optimisation job first runs the feed-forward network
when it is asked for previews (that picture is the stream's first preview, iteration 0, within
a fraction of a second) or to start from it; ``run_instant`` is the whole of a feed-forward job.

A job may have a stop time (its time budget or its call's deadline, set by the service): the
engine gets it less the time its last picture takes to encode and send. Where the server has an
instant tier and the stop may come before the first iteration ends, such a job makes the
feed-forward picture first, and that picture is its result when not even one iteration fits
(OutOfTime); a job with time to spare pays no feed-forward pass.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from styleserve.options import Limits, StyleOptions
from styleserve_export.artifact import Backbone

from styleserve_server import inputs, outputs
from styleserve_server.engine import (
    FeedForward,
    Finished,
    Iterate,
    JobCancelled,
    PrecisionChoice,
    StopAt,
    expected_evaluation_seconds,
    run_job,
    shrink,
)
from styleserve_server.tracing import Tracing
from styleserve_server.workers import Handoff

__all__ = ["FirstPicture", "InstantPicture", "Job", "Mailbox", "OutOfTime", "Start", "run_instant"]

# How many times the predicted length of a job's first iteration (set-up included) the time
# to its stop may be for the job to make a stand-in picture first: the prediction scales the
# start-up probe, which a loaded machine or an unusual picture can miss by a few times.
_FALLBACK_MARGIN = 8.0


@dataclass(frozen=True)
class FirstPicture:
    """The feed-forward picture an optimisation job shows before its first iteration."""

    preview: Image.Image


@dataclass(frozen=True)
class OutOfTime:
    """The end of an optimisation with no time for its first iteration, on a server with an
    instant tier: the feed-forward picture stands in for the starting picture."""

    image: Image.Image
    stop_reason: str  # the StopAt's: "time_budget" or "deadline"
    decode_seconds: float
    network_seconds: float  # all the rest: the feed-forward pass and any try of the engine


Record = FirstPicture | Iterate | Finished | OutOfTime


@dataclass(frozen=True)
class InstantPicture:
    """What a feed-forward job made, and how long its two parts took."""

    image: Image.Image
    decode_seconds: float
    network_seconds: float


def run_instant(
    request: inputs.CheckedRequest,
    feed_forward: FeedForward,
    limits: Limits,
    tracing: Tracing,
    cancel: threading.Event,
) -> InstantPicture:
    """A whole feed-forward job, in the calling (worker) thread; a tiled one stops between
    tiles once ``cancel`` is set (JobCancelled)."""
    started = time.perf_counter()
    with tracing.span("setup"):
        content, styles, _ = inputs.decode_all(request, limits)
    decoded = time.perf_counter()
    masks = None if request.regions is None else request.regions.masks()
    with tracing.span("feed_forward"):
        image = feed_forward.picture(
            content, styles, request.options, style=request.style, regions=masks, cancel=cancel
        )
    return InstantPicture(image, decoded - started, time.perf_counter() - decoded)


class Mailbox(Handoff):
    """A job's records, from its worker thread to the coroutine that streams them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        # Unbounded: a job's progress records are bounded by its iterations (max_iterations,
        # a few hundred bytes each without their pictures), and a slow reader gets them all.
        self._progress: collections.deque[Iterate] = collections.deque()
        self._preview: Iterate | None = None
        self._first: FirstPicture | None = None
        self._end: Finished | OutOfTime | BaseException | None = None

    def put(self, record: Record | BaseException) -> None:
        """From the worker: files ``record`` (an engine record, or the error that ended it)."""
        with self._lock:
            if isinstance(record, FirstPicture):
                self._first = record
            elif isinstance(record, Iterate):
                self._progress.append(dataclasses.replace(record, preview=None))
                if record.preview is not None:
                    self._preview = record
            else:
                self._end = record
        self._notify()

    async def take(self) -> list[Record]:
        """Waits for news and returns it in order: the feed-forward picture, progress records
        (without pictures), the newest preview (an Iterate with a picture) after the progress
        of its iteration, and the Finished (or OutOfTime) record last. Raises the error that
        ended the job, once the rest is out."""
        await self._wake.wait()
        with self._lock:
            self._wake.clear()
            progress, preview, end = list(self._progress), self._preview, self._end
            first = self._first
            self._progress.clear()
            self._preview = None
            self._first = None
            self._end = None
        if isinstance(end, BaseException) and not (progress or preview or first):
            raise end
        if isinstance(end, BaseException):
            self._end = end  # delivered on the next call, after what came before it
            self._wake.set()
            end = None
        batch: list[Record] = [first] if first is not None else []
        for record in progress:
            if preview is not None and preview.iteration < record.iteration:
                batch.append(preview)
                preview = None
            batch.append(record)
        if preview is not None:
            batch.append(preview)
        if end is not None:
            batch.append(end)
        return batch


# Runs a job's work (which returns its outcome) on its slot until its cancel event is set:
# ``Workers.start_job`` with the service's executor and admission.
Start = Callable[[Callable[[], str], threading.Event], asyncio.Future[str]]


class Job:
    """One admitted job running ``run_job`` in a worker thread, started by ``start`` as the
    last step of its construction; ``future`` completes with the job's outcome (finished,
    cancelled, failed) when the worker thread has let go of everything."""

    def __init__(
        self,
        request: inputs.CheckedRequest,
        backbone: Backbone,
        limits: Limits,
        start: Start,
        on_iteration: Callable[[], None],
        *,
        feed_forward: FeedForward | None,
        precision: PrecisionChoice | None,
        stop: StopAt | None,
        tile_pixels: int,
        tracing: Tracing,
    ) -> None:
        """``tile_pixels``: the most pixels the network sees at once (``run_job``'s)."""
        loop = asyncio.get_running_loop()
        self.cancel = threading.Event()
        self.mailbox = Mailbox(loop)
        self._request = request
        self._backbone = backbone
        self._limits = limits
        self._on_iteration = on_iteration
        self._feed_forward = feed_forward
        self._precision = precision
        self._stop = stop
        self._tile_pixels = tile_pixels
        self._tracing = tracing
        self.future = start(self._run, self.cancel)

    def _may_run_out(self, stop: StopAt, options: StyleOptions) -> bool:
        """Whether ``stop`` may come before the job's first iteration ends: only then is the
        feed-forward picture made first, to stand in, so that a job with time to spare pays
        no feed-forward pass. Judged from the start-up measurement of an evaluation, with room
        to spare (_FALLBACK_MARGIN); without one (a requested precision), always."""
        choice = self._precision if options.precision == "auto" else None
        first = self._request.stages[0]
        evaluation = (
            None
            if choice is None
            else expected_evaluation_seconds(choice, (first.width, first.height))
        )
        if evaluation is None:
            return True
        # The stage's set-up and first evaluation, then an iteration's evaluations and one more.
        needed = (options.evals_per_iteration + 3) * evaluation
        return stop.at - time.perf_counter() < _FALLBACK_MARGIN * needed

    def _run(self) -> str:
        """The job in the worker thread; returns its outcome: finished, cancelled or failed."""
        # Set-up is all until the engine's first iteration, which starts the optimisation.
        phases = self._tracing.phases()
        phases.enter("setup")
        try:
            started = time.perf_counter()
            content, styles, init_image = inputs.decode_all(self._request, self._limits)
            decoded = time.perf_counter()
            options = self._request.options
            regions = self._request.regions
            masks = None if regions is None else regions.masks()
            stop = self._stop
            if stop is not None:
                last = self._request.stages[-1]  # at the output's size
                margin = outputs.delivery_seconds((last.width, last.height), options)
                stop = dataclasses.replace(stop, at=stop.at - margin)
            fallback: Image.Image | None = None
            short = stop is not None and self._may_run_out(stop, options)
            if self._feed_forward is not None and (
                options.preview_every > 0 or options.init == "feed_forward" or short
            ):
                picture = self._feed_forward.picture(
                    content,
                    styles,
                    options,
                    style=self._request.style,
                    regions=masks,
                    cancel=self.cancel,
                )
                if options.preview_every > 0:
                    self.mailbox.put(FirstPicture(shrink(picture, options.preview_size)))
                if options.init == "feed_forward":
                    # To the engine, the feed-forward start is a given starting picture.
                    options, init_image = options.replace(init="image"), picture
                if short:
                    fallback = picture

            def stand_in(picture: Image.Image, reason: str) -> OutOfTime:
                return OutOfTime(picture, reason, decoded - started, time.perf_counter() - decoded)

            if stop is not None and fallback is not None and time.perf_counter() >= stop.at:
                # Not even the engine's set-up fits: trying it would only miss the deadline.
                self.mailbox.put(stand_in(fallback, stop.reason))
                return "finished"
            # Decoding and the feed-forward picture are set-up too (Timings.setup_seconds).
            prepared = time.perf_counter() - started
            records = run_job(
                self._backbone,
                content,
                styles,
                options,
                init_image=init_image,
                cancel=self.cancel,
                precision=self._precision,
                stop=stop,
                style=self._request.style,
                stages=self._request.stages,
                regions=masks,
                tile_pixels=self._tile_pixels,
            )
            for record in records:
                if isinstance(record, Iterate):
                    phases.enter("optimise")
                    self._on_iteration()
                    self.mailbox.put(record)
                elif record.iterations == 0 and fallback is not None:
                    self.mailbox.put(stand_in(fallback, record.stop_reason))
                else:
                    setup = record.setup_seconds + prepared
                    self.mailbox.put(dataclasses.replace(record, setup_seconds=setup))
        except JobCancelled as error:
            self.mailbox.put(error)
            return "cancelled"
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which re-raises
            phases.end(error)
            self.mailbox.put(error)
            return "failed"
        finally:
            phases.end()
        return "finished"
