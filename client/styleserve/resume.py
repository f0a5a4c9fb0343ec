"""Following a detachable job across dropped connections, decided once for both clients.

A detachable job (``detachable=True``) keeps running on its replica when its call breaks (a
mobile network, a proxy's idle timeout, a balancer restarting), and every event it sends
carries a sequence number. So a call that fails with UNAVAILABLE after ``Started`` named the
job is not a failed job: the client follows it on by ``WatchJob(job_id, after_sequence)``,
on the replica that runs it first (``Started.replica``: behind a balancer the client's own
channel may reach another one), and drops every event it has already passed on, so that the
caller sees each event once, in order, as if nothing had happened. ``JobPosition`` is how far
a caller got; ``Resumption`` paces the attempts with the channel's retry backoff and gives up
after a bounded number of them, or a bounded time, without an event getting through (never a
hang); a job the server no longer holds is ``NotFound`` at once. The clients only do the calls.

A detachable call that breaks before its ``Started`` came has no job id to watch: its request
is sent again, with the same request id, as the same attempts (AIP-155). A server that still
keeps the job that request started (its ``Started`` was lost with the connection) follows that
job from its first event instead of starting a second one; a call that broke while queued left
no job, and the request queues again. Either way the call is a new one, numbered anew.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from styleserve.channel import (
    RETRY_BACKOFF_MULTIPLIER,
    RETRY_INITIAL_BACKOFF,
    RETRY_MAX_BACKOFF,
)
from styleserve.errors import DeadlineExceeded, NotFound, Unavailable
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["Attempt", "JobPosition", "Resumption"]

Stub = TypeVar("Stub")

# Reattach attempts in a row without an event getting through before the client gives up: with
# the backoff, 35.5 s of waiting (0, 0.5, 1, 2, 4, 8, 10, 10 s apart) plus the failed
# connects (47 s in all measured at a dead address), longer than a proxy or a replica's
# network takes to come back, shorter than a detach grace.
_ATTEMPTS = 8
# ...and at most this long in a row, however quickly the attempts fail.
_OUTAGE_SECONDS = 60.0


class JobPosition:
    """The job a call follows (from its ``Started``) and the last event passed on."""

    def __init__(self, job_id: str = "", after_sequence: int = 0, replica: str = "") -> None:
        self.job_id = job_id
        self.replica = replica
        self.last_sequence = after_sequence
        # The caller's deadline counts from the job's start, not from a reattach.
        self.since = time.monotonic()

    def is_new(self, response: pb.StyleTransferResponse) -> bool:
        """Whether ``response`` is past what was passed on (a replayed one is not); notes the
        job's id and replica from its Started. A server without sequence numbers sends 0:
        everything is new, as before detachable jobs."""
        if response.sequence:
            if response.sequence <= self.last_sequence:
                return False
            self.last_sequence = response.sequence
        if response.WhichOneof("event") == "started" and response.started.job_id:
            self.job_id = response.started.job_id
            self.replica = response.started.replica
        return True


@dataclass(frozen=True)
class Attempt(Generic[Stub]):
    """One call to make: after ``delay`` seconds, on ``stub``, within ``timeout``: WatchJob,
    or StyleTransfer again for a job that had not started (``resend``)."""

    delay: float
    stub: Stub
    request: pb.WatchJobRequest | pb.StyleTransferRequest
    timeout: float | None

    @property
    def resend(self) -> bool:
        return isinstance(self.request, pb.StyleTransferRequest)


class Resumption:
    """The reattach attempts of a job whose call (or watch) broke with ``error``."""

    def __init__(
        self,
        position: JobPosition,
        error: Unavailable | None,
        timeout: float | None,
        request: pb.StyleTransferRequest | None = None,
    ) -> None:
        self.position = position
        self._error = error
        self._deadline = None if timeout is None else position.since + timeout
        self._request = request

    @classmethod
    def after(
        cls,
        position: JobPosition,
        error: Unavailable,
        timeout: float | None,
        request: pb.StyleTransferRequest,
    ) -> Resumption:
        """The resumption of the broken call of ``request``; re-raises ``error`` when there is
        nothing to resume (a job that is not detachable)."""
        if not request.detachable:
            raise error
        return cls(position, error, timeout, request)

    @property
    def replica(self) -> str:
        return self.position.replica

    def moved(self, attempt: Attempt[Stub]) -> bool:
        """Whether ``attempt``, a request sent again, started the job on a replica of its own
        (``Started.replica``), which the attempts from here on should reach first: the client
        then begins them anew with that replica's channel."""
        return attempt.resend and bool(self.position.job_id and self.position.replica)

    def failed(self, error: Unavailable) -> None:
        """An attempt broke too; the next one follows (or the client gives up)."""
        self._error = error

    def lost(self, error: NotFound) -> NotFound:
        """The error for a job its server no longer holds (``error`` itself for a request
        sent again, which names no job, and for a watch's first answer: a job that never
        broke away was not lost, and the server's message says what the id may be)."""
        if not self.position.job_id or self._error is None:
            return error
        return NotFound(
            f"job {self.position.job_id} was lost: no server holds it (its replica restarted "
            "or was drained, or the id expired, is unknown or another caller's); run it again "
            f"({error.details})",
            request_id=error.request_id,
        )

    def attempts(self, stubs: Sequence[Stub]) -> Iterator[Attempt[Stub]]:
        """The attempts to make, in turn on each of ``stubs`` (the replica's first), the first
        at once, then backing off; the count and the time start again whenever an event got
        through. Raises Unavailable when they run out, DeadlineExceeded past the deadline."""
        tried, delay, seen = 0, 0.0, self.position.last_sequence
        outage = time.monotonic()
        while True:
            now = time.monotonic()
            if self.position.last_sequence != seen:
                tried, delay, seen, outage = 0, 0.0, self.position.last_sequence, now
            if tried >= _ATTEMPTS or now + delay - outage > _OUTAGE_SECONDS:
                raise self._gave_up(tried, now - outage)
            timeout = None if self._deadline is None else self._deadline - now - delay
            if timeout is not None and timeout <= 0:
                raise DeadlineExceeded(
                    f"the deadline passed while reattaching to job {self.position.job_id}"
                )
            if self.position.job_id or self._request is None:
                request: pb.WatchJobRequest | pb.StyleTransferRequest = pb.WatchJobRequest(
                    job_id=self.position.job_id, after_sequence=self.position.last_sequence
                )
                stub = stubs[tried % len(stubs)]
            else:
                # A new call, numbered anew: nothing of a job was passed on yet.
                self.position.last_sequence = seen = 0
                request, stub = self._request, stubs[-1]
            yield Attempt(delay, stub, request, timeout)
            tried += 1
            delay = min(
                max(delay * RETRY_BACKOFF_MULTIPLIER, RETRY_INITIAL_BACKOFF), RETRY_MAX_BACKOFF
            )

    def _gave_up(self, tried: int, seconds: float) -> Unavailable:
        job, error = self.position, self._error
        if not job.job_id and self._request is not None:
            return Unavailable(
                f"the connection broke before the job started and {tried} attempts to send it "
                f"again over {seconds:.0f} s failed "
                f"({error.details if error else 'no answer'}); send it again with request id "
                f"{self._request.request_id!r}: a server that started it follows that job",
                request_id=error.request_id if error else None,
            )
        return Unavailable(
            f"the connection to job {job.job_id} broke and {tried} attempts to reattach over "
            f"{seconds:.0f} s failed ({error.details if error else 'no answer'}); it may still "
            f"run: watch it with watch_job({job.job_id!r}, after_sequence={job.last_sequence}) "
            "while the server keeps it",
            request_id=error.request_id if error else None,
        )
