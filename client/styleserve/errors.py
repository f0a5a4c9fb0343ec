"""The client's exceptions, and the one place where a gRPC failure becomes one of them.

Callers catch ``styleserve.ResourceExhausted`` rather than inspecting ``grpc.StatusCode``s, and
every client path (sync, asyncio, CLI) raises the same classes because they all go through
``from_rpc_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

import grpc

__all__ = [
    "REQUEST_ID_KEY",
    "RETRY_AFTER_KEY",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "StyleserveError",
    "Unauthenticated",
    "Unavailable",
    "VideoError",
    "from_rpc_error",
    "from_status",
]

# Trailing-metadata key in which the server suggests, in seconds, when to retry a refused job.
RETRY_AFTER_KEY = "retry-after"
# Metadata key of the call's request id, which the server's log lines carry.
REQUEST_ID_KEY = "x-request-id"


class StyleserveError(Exception):
    """A call failed. ``code`` is the gRPC status, ``details`` the server's message and
    ``request_id`` the id the server logged the call under (None when no server answered)."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self, details: str, code: grpc.StatusCode | None = None, *, request_id: str | None = None
    ) -> None:
        self.code: grpc.StatusCode = code or self.default_code
        self.details = details
        self.request_id = request_id
        super().__init__(f"{self.code.name}: {details}")


class InvalidArgument(StyleserveError):
    """A picture or an option was rejected; the details name which and why."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class VideoError(InvalidArgument):
    """A clip cannot be stylised as it is, found by the client before any call: ``reason`` is
    "unreadable" (missing, corrupt or cut off), "codec" (unknown, or no encoder for the
    output), "variable_frame_rate", "no_frames", "no_video" (e.g. audio only), "rotation" or
    "limits" (over the server's); the details name the file and what to do."""

    def __init__(self, details: str, *, reason: str, request_id: str | None = None) -> None:
        super().__init__(details, request_id=request_id)
        self.reason = reason


class ResourceExhausted(StyleserveError):
    """The server's job slots and queue are full; retry after ``retry_after`` seconds (when
    the server suggested a delay, else None)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        details: str,
        code: grpc.StatusCode | None = None,
        *,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details, code, request_id=request_id)
        self.retry_after = retry_after


class Cancelled(StyleserveError):
    """The call was cancelled (by this client or the server shutting down)."""

    default_code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(StyleserveError):
    """The call's deadline passed before the result arrived."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(StyleserveError):
    """The server cannot be reached or is shutting down."""

    default_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(StyleserveError):
    """The server wants a (different) token."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(StyleserveError):
    """The token is valid but may not do this."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(StyleserveError):
    """The server does not hold what the call names (e.g. a style_id registered on another
    replica, or evicted); the clients register their own styles again by themselves."""

    default_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(StyleserveError):
    """The server cannot run this kind of job as configured (e.g. no feed-forward network)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class DataLoss(StyleserveError):
    """Bytes do not match their digest: an upload the server received (it stored nothing), or
    a result this client assembled. Sending again is the remedy."""

    default_code = grpc.StatusCode.DATA_LOSS


class OutOfRange(StyleserveError):
    """A position past what the server holds: a watch resuming after a sequence number the
    job has not reached."""

    default_code = grpc.StatusCode.OUT_OF_RANGE


class Internal(StyleserveError):
    """The server failed; the details say where."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[StyleserveError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgument,
        ResourceExhausted,
        Cancelled,
        DeadlineExceeded,
        Unavailable,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        DataLoss,
        OutOfRange,
        Internal,
    )
}


class _FailedCall(Protocol):
    """What ``grpc.RpcError`` (sync, as raised by calls) and ``grpc.aio.AioRpcError`` share."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return None


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def from_rpc_error(error: grpc.RpcError) -> StyleserveError:
    """The styleserve exception for a failed call (``grpc.RpcError`` or ``AioRpcError``)."""
    call = cast(_FailedCall, error)
    trailers = call.trailing_metadata()
    retry_after = _seconds(_metadata_value(trailers, RETRY_AFTER_KEY))
    request_id = _metadata_value(trailers, REQUEST_ID_KEY)
    return from_status(call.code(), call.details(), request_id, retry_after)


def from_status(
    code: grpc.StatusCode | int,
    details: str | None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> StyleserveError:
    """The styleserve exception for a status: a failed call's, or one a server reports in a
    message (a failed job's ``google.rpc.Status``, whose ``code`` is the number)."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    details = details or code.name.lower().replace("_", " ")
    cls = _BY_CODE.get(code, StyleserveError)
    if cls is ResourceExhausted:
        return ResourceExhausted(details, code, request_id=request_id, retry_after=retry_after)
    return cls(details, code, request_id=request_id)
