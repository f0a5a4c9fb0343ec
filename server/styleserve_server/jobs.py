"""Runs an admitted job in a worker thread and hands its records to the stream.

The optimisation must never wait for the network: the worker only ever drops records into a
Mailbox, which never blocks. A slow reader finds several records waiting when it comes back:
every pending progress record up to a bound (past it the oldest are dropped, the newest
always kept), only the newest preview (older ones are stale anyway), and always the end of
the job (its result or its error). Setting the job's cancel event stops the engine within one
iteration; the job's future completes when the worker thread is really done, which is when
its slot and memory are free.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Executor

from styleserve.options import Limits
from styleserve_export.loader import Backbone

from styleserve_server import inputs
from styleserve_server.engine import Finished, Iterate, JobCancelled, run_job

__all__ = ["Job", "Mailbox"]

# Progress records waiting for a slow reader; older ones are dropped past this.
_PENDING_PROGRESS = 64

Record = Iterate | Finished


class Mailbox:
    """A hand-off from one worker thread to one coroutine that never blocks the worker."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._progress: collections.deque[Iterate] = collections.deque(maxlen=_PENDING_PROGRESS)
        self._preview: Iterate | None = None
        self._end: Finished | BaseException | None = None

    def put(self, record: Record | BaseException) -> None:
        """From the worker: files ``record`` (an engine record, or the error that ended it)."""
        with self._lock:
            if isinstance(record, Iterate):
                self._progress.append(dataclasses.replace(record, preview=None))
                if record.preview is not None:
                    self._preview = record
            else:
                self._end = record
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            pass

    async def take(self) -> list[Record]:
        """Waits for news and returns it in order: progress records (without pictures), the
        newest preview (an Iterate with a picture) after the progress of its iteration, and
        the Finished record last. Raises the error that ended the job, once the rest is out."""
        await self._wake.wait()
        with self._lock:
            self._wake.clear()
            progress, preview, end = list(self._progress), self._preview, self._end
            self._progress.clear()
            self._preview = None
            self._end = None
        if isinstance(end, BaseException) and not (progress or preview):
            raise end
        if isinstance(end, BaseException):
            self._end = end  # delivered on the next call, after what came before it
            self._wake.set()
            end = None
        batch: list[Record] = []
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


class Job:
    """One admitted job running ``run_job`` in ``executor``; ``future`` completes with the
    job's outcome (finished, cancelled, failed) when the worker thread has let go of everything."""

    def __init__(
        self,
        request: inputs.CheckedRequest,
        backbone: Backbone,
        limits: Limits,
        executor: Executor,
        on_iteration: Callable[[], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.cancel = threading.Event()
        self.mailbox = Mailbox(loop)
        self._request = request
        self._backbone = backbone
        self._limits = limits
        self._on_iteration = on_iteration
        # The copied context carries the request id into the worker's log records.
        self.future = loop.run_in_executor(executor, contextvars.copy_context().run, self._run)

    def _run(self) -> str:
        """The job in the worker thread; returns its outcome: finished, cancelled or failed."""
        try:
            content, styles, init_image = inputs.decode_all(self._request, self._limits)
            records = run_job(
                self._backbone,
                content,
                styles,
                self._request.options,
                init_image=init_image,
                cancel=self.cancel,
            )
            for record in records:
                if isinstance(record, Iterate):
                    self._on_iteration()
                self.mailbox.put(record)
        except JobCancelled as error:
            self.mailbox.put(error)
            return "cancelled"
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which re-raises
            self.mailbox.put(error)
            return "failed"
        return "finished"
