"""Work on a job slot, in a worker thread: the one way every call starts what it computes.

Why it exists: an optimisation job, an instant picture, a style's registration and a video
call each hold a slot (``admission``) while their work runs in a worker thread, and around
every one of them the same must hold: the end of a drain's grace can stop the work through its
cancel event, the slot and its memory are released exactly once (when the thread has let go,
or at once when the work could not start), and the work's log records carry the call's
request id (the copied context).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from styleserve_server.admission import Admission
from styleserve_server.metrics import Metrics

__all__ = ["Handoff", "Workers"]

T = TypeVar("T")


class Handoff:
    """What a worker thread's hand-off to one coroutine on the event loop shares (a job's
    ``jobs.Mailbox``, a video call's records): a lock over what the worker files, and an event
    the coroutine waits on, set from the worker without ever blocking it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._wake = asyncio.Event()

    def _notify(self) -> None:
        """Wakes the coroutine, from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._wake.set)


class Workers:
    """The service's running work, known by its cancel events."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._running: set[threading.Event] = set()

    def start(
        self,
        work: Callable[[], T],
        cancel: threading.Event,
        executor: Executor,
        release: Callable[[asyncio.Future[T] | None], None],
    ) -> asyncio.Future[T]:
        """Runs ``work`` in a thread of ``executor`` on the slot the caller holds;
        ``release(future)`` frees the slot when the thread is done, or at once (``future``
        None) when the work could not start. Until then ``stop_all`` sets ``cancel``."""

        def done(future: asyncio.Future[T] | None) -> None:
            self._running.discard(cancel)
            if future is not None and not future.cancelled():
                # Read here: a caller cancelled while it awaited the work (shielded) never
                # reads its error, which asyncio would log as never retrieved.
                future.exception()
            release(future)

        self._running.add(cancel)
        try:
            future = asyncio.get_running_loop().run_in_executor(
                executor, contextvars.copy_context().run, work
            )
        except BaseException:
            done(None)
            raise
        future.add_done_callback(done)
        return future

    def start_job(
        self,
        work: Callable[[], str],
        cancel: threading.Event,
        *,
        executor: Executor,
        admission: Admission,
        nbytes: int,
    ) -> asyncio.Future[str]:
        """``start`` for an optimisation job or a video call, whose work returns its outcome
        (finished, cancelled or failed): its seconds are counted by outcome and free its slot
        of ``admission`` with the ``nbytes`` of memory it held (they tune the retry hint)."""
        began = time.monotonic()

        def release(future: asyncio.Future[str] | None) -> None:
            if future is None:
                admission.release(nbytes=nbytes)
                return
            seconds = time.monotonic() - began
            outcome = "cancelled" if future.cancelled() else future.result()
            self._metrics.job_duration.labels(outcome).observe(seconds)
            admission.release(seconds, nbytes=nbytes)

        return self.start(work, cancel, executor, release)

    def stop_all(self) -> None:
        """Sets the cancel event of all the running work (the drain's grace is over)."""
        for cancel in self._running:
            cancel.set()
