"""Keeps detachable jobs (StyleTransferRequest.detachable) and their events past their calls.

A job is tied to its call: a dropped connection would otherwise lose minutes of work that its
caller will be back for in seconds. A detachable job's events go to its ``KeptJob`` instead of
straight to the wire; its own call and any number of WatchJob calls follow it from there
(``JobStore.follow``: replay what is kept after a sequence number, then live).

gRPC does not tell a server whether a call ended by its caller's cancel or by a dropped
connection, so the rule is the one the server can keep: a detachable job survives its call
ending for any reason. Unwatched, it runs on for the detach grace and is then cancelled (its
slot frees as a cancelled job's does, and it stays, saying so, for the retention time); watched
again within the grace, it goes on. Its time budget, deadline policy and a server's shutdown
stop it as they stop any job.

Kept are every event from Started on except older previews (a newer one replaces them in the
replay): Progress, the newest Preview, the result chunks and the Result. A finished job stays
for the retention time, within the store's byte budget (oldest finished evicted first); the
events of running jobs are never dropped, so while they alone exceed the budget the store holds
more than it for as long as they run.

A request id names one request (AIP-155): a detachable request whose caller and request id are
those of a job the store still keeps is that request sent again (typically by an SDK whose call
broke before Started reached it), so it follows that job from its first kept event instead of
starting a second one (``JobStore.resubmitted``). A job joins the store when it gets its slot,
so a call that broke while queued left no job (its queue wait ended with it), and its resend
queues again. Ids are matched per caller and only while the job is kept.

Besides following, a caller may look its jobs up, list them and cancel one by id
(``operations``, google.longrunning.Operations). A job cancelled so stays, cancelled, for the
retention time like a finished one; the server's stop ends every job still running UNAVAILABLE
to its watchers (``close``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from styleserve.options import OptionsError
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server.admission import ShuttingDown
from styleserve_server.metrics import Metrics

__all__ = [
    "MAX_JOB_ID_LENGTH",
    "CancelledById",
    "FutureSequence",
    "JobStore",
    "JobRunning",
    "JobStoreInfo",
    "JobsOff",
    "KeptJob",
    "Send",
    "StartedMeanwhile",
    "UnknownJob",
    "Unwatched",
]

log = logging.getLogger(__name__)

# Job ids are 32 characters (24 random bytes, URL-safe base64); anything much longer is no id.
MAX_JOB_ID_LENGTH = 64
_ID_BYTES = 24


def _new_id() -> str:
    """A fresh job id that does not start with "-": a command line would take it for an option
    (``styleserve jobs watch ID``); one id in 64 is drawn again."""
    while (job_id := secrets.token_urlsafe(_ID_BYTES)).startswith("-"):
        pass
    return job_id


Send = Callable[[pb.StyleTransferResponse], Awaitable[None]]


class UnknownJob(Exception):
    """No job of this caller has the id: never held, expired, or another caller's (alike, so
    that an id reveals nothing about other callers' jobs)."""

    def __init__(self, field: str = "job_id") -> None:
        super().__init__(
            f"{field}: no such job for this caller (unknown, expired after its retention, "
            "evicted for newer results, run by another replica, or another caller's); send the "
            "request again"
        )


class FutureSequence(Exception):
    """A watch asked to resume after an event the job has not sent."""

    def __init__(self, asked: int, newest: int) -> None:
        super().__init__(
            f"after_sequence: is {asked}, but the job's newest event is {newest}; resume after "
            "the last sequence number received (0 replays every kept event)"
        )


class JobsOff(Exception):
    """The server keeps no detachable jobs (job_store_bytes is 0)."""

    def __init__(self) -> None:
        super().__init__(
            "detachable: this server keeps no detachable jobs (started with job_store_bytes 0, "
            "GetServerInfo jobs.max_bytes); send the request without detachable"
        )


class StartedMeanwhile(Exception):
    """A request queued while the same request (its caller and request id), sent before, got
    a slot and started: following that job is the answer, and its call is the way to it."""

    def __init__(self) -> None:
        super().__init__(
            "this request (its request id) started on this server while it queued, sent "
            "before; send it again with the same request id to follow that job"
        )


class CancelledById(Exception):
    """The job's caller cancelled it by id (CancelOperation)."""

    def __init__(self) -> None:
        super().__init__("the job was cancelled by id (CancelOperation)")


class Unwatched(Exception):
    """Nobody followed the detached job for its detach grace: the server cancelled it."""

    def __init__(self, grace_seconds: int) -> None:
        super().__init__(
            f"the job was cancelled: nobody watched it for its detach grace of {grace_seconds} s "
            "(detach_grace_seconds); watch it (WatchJob) within the grace to keep it running"
        )


class JobRunning(Exception):
    """A job was to be forgotten while it runs."""

    def __init__(self) -> None:
        super().__init__(
            "name: the job is still running; cancel it (CancelOperation) or wait for its end "
            "before deleting it"
        )


@dataclass(frozen=True)
class JobStoreInfo:
    """What GetServerInfo reports of the store (``pb.JobStoreInfo``'s fields)."""

    detach_grace_seconds: int
    retention_seconds: int
    max_bytes: int
    used_bytes: int


class KeptJob:
    """One detachable job's kept events, its end, and who follows it."""

    def __init__(self, job_id: str, owner: str, request_id: str = "") -> None:
        self.job_id = job_id
        self.owner = owner
        self.request_id = request_id
        # Its place in the order jobs joined the store (listing pages resume after it).
        self.number = 0
        # The newest Progress and the Result, for a look-up without a replay.
        self.progress: pb.Progress | None = None
        self.result: pb.Result | None = None
        # By sequence number, in order (dicts keep insertion order; numbers only grow).
        self.events: dict[int, pb.StyleTransferResponse] = {}
        self.newest = 0
        self.nbytes = 0
        self.done = False
        self.error: BaseException | None = None
        self.watchers = 0
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self._preview = 0
        self._changed = asyncio.Event()
        # Set once at the end, for a wait that does not follow the events.
        self.ended = asyncio.Event()

    def _keep(self, message: pb.StyleTransferResponse) -> int:
        """Files ``message`` (numbered already); returns the bytes the job's events grew by."""
        grown = message.ByteSize()
        if message.HasField("progress"):
            self.progress = message.progress
        elif message.HasField("result"):
            self.result = message.result
        if message.HasField("preview"):
            if self._preview:
                grown -= self.events.pop(self._preview).ByteSize()
            self._preview = message.sequence
        self.events[message.sequence] = message
        self.newest = message.sequence
        self.nbytes += grown
        self._wake()
        return grown

    def _end(self, error: BaseException | None) -> None:
        if not self.done:
            self.done, self.error = True, error
            self.ended.set()
            self._wake()

    def _wake(self) -> None:
        # A fresh event per change: each waiter took the one current when it last looked.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow(self, after: int, send: Send) -> None:
        while True:
            changed = self._changed
            # The events numbered since ``after``, taken at once (the sends may await): only
            # the new numbers are read, skipping older previews a newer one dropped.
            events = self.events
            fresh = [(s, events[s]) for s in range(after + 1, self.newest + 1) if s in events]
            for sequence, message in fresh:
                await send(message)
                after = sequence
            if self.done and after >= self.newest:
                if self.error is not None:
                    raise self.error
                return
            if after >= self.newest:
                await changed.wait()


class JobStore:
    """The detachable jobs of one server, by id; see the module's docstring for their life."""

    def __init__(
        self, max_bytes: int, grace_seconds: int, retention_seconds: int, metrics: Metrics
    ) -> None:
        self._max_bytes = max_bytes
        self._grace = grace_seconds
        self._retention = retention_seconds
        self._metrics = metrics
        self._jobs: dict[str, KeptJob] = {}
        # (owner, request id) -> its job, for a request sent again (the module's docstring).
        self._requests: dict[tuple[str, str], KeptJob] = {}
        # Finished jobs, oldest first: the order of eviction for room.
        self._finished: collections.OrderedDict[str, KeptJob] = collections.OrderedDict()
        self._used = 0
        self._joined = 0

    def info(self) -> JobStoreInfo:
        return JobStoreInfo(self._grace, self._retention, self._max_bytes, self._used)

    def open(self, owner: str, request_id: str = "") -> KeptJob:
        """A new job bound to ``owner`` (a caller identity, ``access.caller_identity``), with a
        fresh unguessable id, for the request ``request_id`` ("": none to send again); held
        once it ``run``s. Raises JobsOff when the store is off."""
        if not self._max_bytes:
            raise JobsOff
        return KeptJob(_new_id(), owner, request_id)

    def resubmitted(self, owner: str, request_id: str) -> KeptJob | None:
        """The job ``owner``'s request ``request_id`` runs already, if the store keeps one."""
        return self._requests.get((owner, request_id))

    def run(self, kept: KeptJob, produce: Callable[[Send], Awaitable[None]]) -> None:
        """Runs ``produce(send)`` (which makes the job's numbered events, from Started on) as a
        task of its own, so that it outlives the call that started it."""
        self._jobs[kept.job_id] = kept
        if kept.request_id:
            self._requests[kept.owner, kept.request_id] = kept
        self._joined += 1
        kept.number = self._joined

        async def send(message: pb.StyleTransferResponse) -> None:
            if self._jobs.get(kept.job_id) is kept:
                self._grow(kept._keep(message))

        async def work() -> None:
            try:
                await produce(send)
            except asyncio.CancelledError:
                kept._end(asyncio.CancelledError())
                raise
            except BaseException as error:  # noqa: BLE001 - the watchers raise it as theirs
                kept._end(error)
            else:
                kept._end(None)

        kept.task = asyncio.ensure_future(work())
        # Filed as finished from the task's end, not from inside ``work``: a task cancelled
        # before its first step never runs a line of it. Kept when cancelled by id (a dropped
        # job is held no more).
        kept.task.add_done_callback(lambda _: self._finish(kept))

    def find(self, job_id: str, owner: str, after: int = 0, *, field: str = "job_id") -> KeptJob:
        """``owner``'s job ``job_id``, checked for a watch resuming after ``after``; ``field``
        names the id in an error."""
        if len(job_id) > MAX_JOB_ID_LENGTH:
            # Not echoed: a value this long is no id of this server's.
            raise OptionsError(field, f"is longer than a job id ({MAX_JOB_ID_LENGTH} at most)")
        kept = self._jobs.get(job_id)
        if kept is None or not secrets.compare_digest(kept.owner, owner):
            raise UnknownJob(field)
        if after > kept.newest:
            raise FutureSequence(after, kept.newest)
        return kept

    def listed(self, owner: str, after: int, most: int) -> list[KeptJob]:
        """``owner``'s jobs that joined the store after the ``after``-th (``KeptJob.number``),
        oldest first, at most ``most``."""
        mine = (kept for kept in self._jobs.values() if kept.owner == owner)
        return sorted((kept for kept in mine if kept.number > after), key=lambda k: k.number)[:most]

    def cancel(self, kept: KeptJob) -> None:
        """Stops ``kept`` now (its slot frees as a cancelled job's does); it stays, cancelled,
        for the retention time. A finished job stays as it ended."""
        if kept.done or kept.task is None:
            return
        log.info("job cancelled by id", extra={"job_id": kept.job_id})
        self._metrics.jobs_cancelled.inc()
        # Ended first, so that its followers hear why rather than a bare cancel.
        kept._end(CancelledById())
        kept.task.cancel()

    def forget(self, kept: KeptJob) -> None:
        """Drops a finished ``kept`` (its events and result) before its retention ends; raises
        JobRunning for a job that runs."""
        if not kept.done:
            raise JobRunning
        self._metrics.jobs_expired.labels("deleted").inc()
        self._drop(kept)

    async def follow(self, kept: KeptJob, after: int, send: Send, *, own: bool = False) -> None:
        """Sends ``kept``'s events numbered above ``after`` through ``send``, then the live ones,
        and returns after its last (or raises its error). ``own``: the job's own call, whose end
        before the job's counts as a detach. While nobody follows a running job, the detach
        grace runs."""
        kept.watchers += 1
        if kept.timer is not None and not kept.done:
            kept.timer.cancel()
            kept.timer = None
        try:
            await kept._follow(after, send)
        finally:
            kept.watchers -= 1
            if not kept.done:
                if own:
                    self._metrics.jobs_detached.inc()
                    log.info("job detached", extra={"job_id": kept.job_id})
                if not kept.watchers and self._jobs.get(kept.job_id) is kept:
                    loop = asyncio.get_running_loop()
                    kept.timer = loop.call_later(self._grace, self._unwatched, kept)

    def close(self) -> None:
        """Stops every kept job and timer (the server is stopping): the watchers of a job still
        running get ShuttingDown (UNAVAILABLE) rather than waiting on it."""
        for kept in list(self._jobs.values()):
            kept._end(ShuttingDown())
            self._drop(kept)

    def _unwatched(self, kept: KeptJob) -> None:
        """The detach grace ran out with nobody watching: the job stops, its slot frees, and
        it stays, cancelled and saying why, for the retention time (as one cancelled by id)."""
        if kept.watchers or kept.done or kept.task is None:
            return
        log.info("detached job cancelled: unwatched for its grace", extra={"job_id": kept.job_id})
        self._metrics.jobs_unwatched.inc()
        kept._end(Unwatched(self._grace))
        kept.task.cancel()

    def _finish(self, kept: KeptJob) -> None:
        if self._jobs.get(kept.job_id) is not kept:
            return
        if kept.timer is not None:
            kept.timer.cancel()
        self._finished[kept.job_id] = kept
        loop = asyncio.get_running_loop()
        kept.timer = loop.call_later(self._retention, self._expire, kept, "retention")
        self._grow(0)

    def _expire(self, kept: KeptJob, reason: str) -> None:
        if self._jobs.get(kept.job_id) is kept:
            self._metrics.jobs_expired.labels(reason).inc()
            self._drop(kept)

    def _grow(self, nbytes: int) -> None:
        """Counts ``nbytes`` more and evicts the oldest finished jobs while over the budget."""
        self._used += nbytes
        while self._used > self._max_bytes and self._finished:
            oldest = next(iter(self._finished.values()))
            self._expire(oldest, "room")
        self._metrics.jobs_changed(self._used, len(self._jobs))

    def _drop(self, kept: KeptJob) -> None:
        """Forgets ``kept`` (its bytes freed once its last watcher lets go) and stops it."""
        self._jobs.pop(kept.job_id, None)
        if self._requests.get((kept.owner, kept.request_id)) is kept:
            del self._requests[kept.owner, kept.request_id]
        self._finished.pop(kept.job_id, None)
        self._used -= kept.nbytes
        if kept.timer is not None:
            kept.timer.cancel()
            kept.timer = None
        if kept.task is not None and not kept.task.done():
            kept.task.cancel()
        self._metrics.jobs_changed(self._used, len(self._jobs))
