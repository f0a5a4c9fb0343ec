"""Many pictures in one style: bounded concurrency over every replica, one outcome per picture.

A folder of pictures is a loop over ``stylize``, but a plain loop keeps one job in flight while
the deployment has slots for many, and stops at the first bad picture. ``Client.stylize_many``
and ``AsyncClient.stylize_many`` run that loop here instead: as many jobs at once as the
servers behind the address have slots (``concurrency``), each picture's result or failure
yielded as its own ``Outcome`` as soon as it is known, and the calls still in flight cancelled
when the caller stops iterating (``break``, an exception, Ctrl-C), so that the servers stop
working for nobody.

Replicas are counted as gRPC spreads calls over them: with ``round_robin`` every address the
target resolves to takes calls, so a Service of three pods with two slots each runs six jobs
at once; with ``pick_first`` one address takes them all. The work itself goes through each
client's own ``stylize`` (uploads, re-registered styles, the one error translation), so a
picture of a batch behaves as it would alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import socket
import threading
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from styleserve.errors import StyleserveError
from styleserve.events import Result
from styleserve.pictures import Picture

__all__ = [
    "Failure",
    "InFlight",
    "Outcome",
    "batch_concurrency",
    "replica_count",
    "run_batch",
    "run_batch_async",
]

Failure = StyleserveError | OSError
"""What fails one picture of a batch without stopping the others: the server refused or
failed it (``StyleserveError``), or its file could not be read (``OSError``)."""

# gRPC's port when a target names none.
_DEFAULT_PORT = 443
# A finished job's handle: a concurrent.futures.Future or an asyncio.Task.
_D = TypeVar("_D")


@dataclass(frozen=True)
class Outcome:
    """One picture of a batch: ``content`` as the caller gave it, at ``index`` in the order
    given, and its ``result`` or the ``error`` that failed it (exactly one is set).
    ``request_id`` is the id the job was sent with, which the server's logs carry."""

    index: int
    content: Picture
    request_id: str
    result: Result | None = None
    error: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


class InFlight:
    """The gRPC calls a sync batch has open, so that stopping the batch can cancel them from
    the caller's thread while worker threads are blocked reading them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[_Cancellable] = set()
        self._cancelled = False

    def add(self, call: _Cancellable) -> None:
        with self._lock:
            if not self._cancelled:
                self._calls.add(call)
                return
        # A worker that started its call just after the batch stopped.
        call.cancel()

    def discard(self, call: _Cancellable) -> None:
        with self._lock:
            self._calls.discard(call)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            calls, self._calls = self._calls, set()
        for call in calls:
            call.cancel()


def _addresses(target: str) -> int:
    """How many addresses a gRPC target names or resolves to (1 when that cannot be told)."""
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return len([a for a in rest.split(",") if a])
    if scheme == "unix" or scheme == "unix-abstract":
        return 1
    if scheme == "dns":
        # dns:///host:port, dns://authority/host:port or dns:host:port
        rest = rest.removeprefix("//").partition("/")[2] if rest.startswith("//") else rest
    else:
        rest = target
    host, _, port = rest.rpartition(":")
    if not host or "]" in port:
        host, port = rest, ""
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), int(port or _DEFAULT_PORT), type=socket.SOCK_STREAM
        )
    except (OSError, ValueError):
        return 1
    return max(1, len({address for *_, address in found}))


def replica_count(target: str, load_balancing: str | None) -> int:
    """How many servers take a channel's calls at once: every address the target resolves to
    under ``round_robin``, one under ``pick_first`` (gRPC's default) or a policy the caller's
    own service config chose (None)."""
    return _addresses(target) if load_balancing == "round_robin" else 1


def batch_concurrency(job_slots: int, target: str, load_balancing: str | None) -> int:
    """Jobs a batch keeps in flight by default: the slots one server advertises
    (``ServerLimits.job_slots``, alike on every replica) times the replicas that take calls,
    so that every slot is busy and none of the batch's jobs waits in a queue."""
    return max(1, job_slots) * replica_count(target, load_balancing)


class _Done(Protocol):
    """What a finished ``concurrent.futures.Future`` and ``asyncio.Task`` share."""

    def result(self) -> Result: ...


@dataclass(frozen=True)
class _Job:
    index: int
    content: Picture
    request_id: str

    def outcome(self, done: _Done) -> Outcome:
        """The outcome of this job's finished call; a failure other than a picture's own
        (a bad option, a bug) propagates and so stops the batch."""
        try:
            return Outcome(self.index, self.content, self.request_id, result=done.result())
        except (StyleserveError, OSError) as error:
            return Outcome(self.index, self.content, self.request_id, error=error)


class _Queue:
    """The pictures not yet sent, handed out as room opens, so that ``contents`` may be a lazy
    iterable of any length and never more than ``concurrency`` jobs exist at once."""

    def __init__(self, contents: Iterable[Picture], concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self.concurrency = concurrency
        self._contents = enumerate(contents)

    def next_jobs(self, running: int) -> list[_Job]:
        room = self.concurrency - running
        return [
            _Job(index, content, uuid.uuid4().hex)
            for index, content in itertools.islice(self._contents, max(0, room))
        ]


def _in_order(done: Iterable[_D], jobs: dict[_D, _Job]) -> list[_D]:
    """Jobs that finished together, in the order the caller gave their pictures."""
    return sorted(done, key=lambda d: jobs[d].index)


def run_batch(
    stylize: Callable[[Picture, str], Result],
    contents: Iterable[Picture],
    concurrency: int,
    in_flight: InFlight,
) -> Generator[Outcome, None, None]:
    """``stylize(content, request_id)`` for every content, ``concurrency`` at a time on worker
    threads; outcomes in the order they finish. Leaving early cancels the calls ``stylize``
    registered in ``in_flight`` and waits for the workers to see it."""
    queue = _Queue(contents, concurrency)
    jobs: dict[concurrent.futures.Future[Result], _Job] = {}
    with concurrent.futures.ThreadPoolExecutor(
        concurrency, thread_name_prefix="styleserve-batch"
    ) as pool:
        finished: list[Outcome] = []
        try:
            while True:
                for job in queue.next_jobs(len(jobs)):
                    # In the caller's context, whose trace the call carries (``tracing``).
                    run = contextvars.copy_context().run
                    jobs[pool.submit(run, stylize, job.content, job.request_id)] = job
                # Handed over once the freed slots have work again, so that a caller slow to
                # take an outcome leaves no slot idle.
                yield from finished
                if not jobs:
                    return
                done, _ = concurrent.futures.wait(
                    jobs, return_when=concurrent.futures.FIRST_COMPLETED
                )
                finished = [jobs.pop(f).outcome(f) for f in _in_order(done, jobs)]
        finally:
            # Nothing is in flight after the last outcome; otherwise the caller left early.
            in_flight.cancel()


async def run_batch_async(
    stylize: Callable[[Picture, str], Awaitable[Result]],
    contents: Iterable[Picture],
    concurrency: int,
) -> AsyncGenerator[Outcome, None]:
    """``run_batch`` on the event loop: one task per job in flight, cancelled (and so its
    call) when the caller leaves early; close it with ``contextlib.aclosing`` to have that
    happen at once rather than when the generator is collected."""
    queue = _Queue(contents, concurrency)
    jobs: dict[asyncio.Task[Result], _Job] = {}
    finished: list[Outcome] = []
    try:
        while True:
            for job in queue.next_jobs(len(jobs)):
                jobs[asyncio.ensure_future(stylize(job.content, job.request_id))] = job
            # After the refill, as in run_batch.
            for outcome in finished:
                yield outcome
            if not jobs:
                return
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            finished = [jobs.pop(t).outcome(t) for t in _in_order(done, jobs)]
    finally:
        for task in jobs:
            task.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
