"""The one translation of the service's errors into gRPC statuses.

Every error a call can end with maps here to its status code, a message a caller can act on
(quoting callers' values only shortened) and the trailing metadata that goes with it (a retry
hint for a full queue). The servicer's frame (``service.StyleTransferService._call``) applies
it to every call; the exceptions that exist only to be translated live here too.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence

import grpc
import torch
from styleserve.options import OptionsError

from styleserve_server import logs
from styleserve_server.admission import QueueFull, ShuttingDown
from styleserve_server.engine import JobCancelled
from styleserve_server.job_store import (
    CancelledById,
    FutureSequence,
    JobRunning,
    JobsOff,
    StartedMeanwhile,
    UnknownJob,
    Unwatched,
)
from styleserve_server.memory import TooBig
from styleserve_server.streams import CallerIdle
from styleserve_server.style_cache import StyleCacheOff, StyleTooLarge, UnknownStyle
from styleserve_server.uploads import (
    UnknownUpload,
    UploadCorrupt,
    UploadsOff,
    UploadStoreBusy,
    UploadTooLarge,
)

__all__ = [
    "GraceOver",
    "Metadata",
    "NoFeedForward",
    "NotComputed",
    "NotReady",
    "clear_frames",
    "ended_by_caller",
    "status",
]

Metadata = tuple[tuple[str, str], ...]

# The longest status message sent (messages quote callers' values only shortened, anyway).
MAX_MESSAGE_CHARACTERS = 1000
# The trailer of a refusal no retry can change (gRPC's retry design, A6: a negative pushback).
_NEVER_RETRY: Metadata = (("grpc-retry-pushback-ms", "-1"),)
# How close to its deadline a cancelled call counts as DEADLINE_EXCEEDED (ended_by_caller).
_DEADLINE_SLACK_SECONDS = 0.5


class NotReady(Exception):
    """The weights are still loading or the warm-up has not finished."""

    def __init__(self) -> None:
        super().__init__("server is starting (loading weights); retry in a few seconds")


class NoFeedForward(Exception):
    """The request needs the instant tier, which this server was started without."""

    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field}: this server has no feed-forward network (started with --feed-forward "
            "none); use method optimization and another init, or a server that reports "
            "feed_forward in GetServerInfo"
        )


class NotComputed(Exception):
    """The request asks for a precision this server's device does not compute in, only emulates."""

    def __init__(self, precision: str, timed: Sequence[str]) -> None:
        super().__init__(
            f"options.precision: this server's device does not compute in {precision}, it would "
            f"only emulate it (many times slower than float32); ask for auto or "
            f"{' or '.join(timed)}, as GetServerInfo's precision_choice lists them"
        )


class GraceOver(Exception):
    """The server stopped a running job because its shutdown grace period ran out."""

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down and its grace period ran out before this job ended; "
            "send it again (another replica takes it)"
        )


def status(error: BaseException) -> tuple[grpc.StatusCode, str, Metadata]:
    """The status code, message and trailing metadata a call ending with ``error`` gets (the
    message at most MAX_MESSAGE_CHARACTERS: the status must reach the caller whole)."""
    code, message, trailers = _status(error)
    return code, message[:MAX_MESSAGE_CHARACTERS], trailers


def _status(error: BaseException) -> tuple[grpc.StatusCode, str, Metadata]:
    if isinstance(error, OptionsError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error), ()
    if isinstance(error, QueueFull):
        seconds = round(error.retry_after)
        # retry-after for people and proxies; grpc-retry-pushback-ms for gRPC retry policies.
        trailers = (("retry-after", str(seconds)), ("grpc-retry-pushback-ms", str(seconds * 1000)))
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), trailers
    if isinstance(error, JobCancelled):
        # Callers cancel by ending their call; a job cancelled under a live call was stopped
        # by the server (stop_jobs).
        error = GraceOver()
    if isinstance(error, ShuttingDown | NotReady | GraceOver | StartedMeanwhile):
        return grpc.StatusCode.UNAVAILABLE, str(error), ()
    if isinstance(
        error, NoFeedForward | NotComputed | StyleCacheOff | UploadsOff | JobsOff | JobRunning
    ):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error), ()
    if isinstance(error, CancelledById | Unwatched):
        return grpc.StatusCode.CANCELLED, str(error), ()
    if isinstance(error, FutureSequence):
        return grpc.StatusCode.OUT_OF_RANGE, str(error), ()
    if isinstance(error, UnknownStyle | UnknownUpload | UnknownJob):
        return grpc.StatusCode.NOT_FOUND, str(error), ()
    if isinstance(error, StyleTooLarge | UploadTooLarge | TooBig):
        # Too large for this server whenever it is sent: a negative pushback tells gRPC retry
        # policies (the SDK's retries RESOURCE_EXHAUSTED, for a full queue) not to send it again.
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), _NEVER_RETRY
    if isinstance(error, UploadStoreBusy):
        # Room comes back as the uploads in progress end: a retry after a backoff may fit.
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), ()
    if isinstance(error, CallerIdle):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error), ()
    if isinstance(error, UploadCorrupt):
        return grpc.StatusCode.DATA_LOSS, str(error), ()
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        # Admission counts every job's predicted peak, so this is a prediction the device
        # (or another process on it) proved wrong: a smaller job, or the same one later, fits.
        message = "out of memory for this job: ask for a smaller size or retry later"
        return grpc.StatusCode.RESOURCE_EXHAUSTED, message, ()
    request_id = logs.request_id.get()
    message = f"internal error ({type(error).__name__}); the server log has it under {request_id}"
    return grpc.StatusCode.INTERNAL, message, ()


def ended_by_caller(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """CANCELLED, or DEADLINE_EXCEEDED for a call whose deadline has (nearly) passed: the
    server learns of a passed deadline as a cancel from the client, whose clock started before
    the request reached the server, so the server's own deadline is then still a little ahead
    (more under load) and "nearly due" counts as due."""
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


def clear_frames(error: BaseException) -> None:
    """Clears the locals of the finished frames that raised ``error`` and the errors behind
    it (an abort raised after it keeps them all reachable)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
