"""The client's exceptions, and the one place where a gRPC failure becomes one of them.

Callers catch ``styleserve.ResourceExhausted`` rather than inspecting ``grpc.StatusCode``s, and
every client path (sync, asyncio, CLI) raises the same classes because they all go through
``from_rpc_error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import grpc

__all__ = [
    "RETRY_AFTER_KEY",
    "Cancelled",
    "DeadlineExceeded",
    "Internal",
    "InvalidArgument",
    "PermissionDenied",
    "ResourceExhausted",
    "StyleserveError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

# Trailing-metadata key in which the server suggests, in seconds, when to retry a refused job.
RETRY_AFTER_KEY = "retry-after"


class StyleserveError(Exception):
    """A call failed. ``code`` is the gRPC status, ``details`` the server's message."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: grpc.StatusCode | None = None) -> None:
        self.code: grpc.StatusCode = code or self.default_code
        self.details = details
        super().__init__(f"{self.code.name}: {details}")


class InvalidArgument(StyleserveError):
    """A picture or an option was rejected; the details name which and why."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class ResourceExhausted(StyleserveError):
    """The server's job slots and queue are full; retry after ``retry_after`` seconds (when
    the server suggested a delay, else None)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        details: str,
        code: grpc.StatusCode | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details, code)
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


class FailedPrecondition(StyleserveError):
    """The server cannot run this kind of job as configured (e.g. no feed-forward network)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


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
        FailedPrecondition,
        Internal,
    )
}


class _FailedCall(Protocol):
    """What ``grpc.RpcError`` (sync, as raised by calls) and ``grpc.aio.AioRpcError`` share."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


def _retry_after(metadata: Sequence[tuple[str, str | bytes]] | None) -> float | None:
    for key, value in metadata or ():
        if key == RETRY_AFTER_KEY:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def from_rpc_error(error: grpc.RpcError) -> StyleserveError:
    """The styleserve exception for a failed call (``grpc.RpcError`` or ``AioRpcError``)."""
    call: _FailedCall = error  # type: ignore[assignment]
    code = call.code()
    details = call.details() or code.name.lower().replace("_", " ")
    cls = _BY_CODE.get(code, StyleserveError)
    if cls is ResourceExhausted:
        return ResourceExhausted(details, code, retry_after=_retry_after(call.trailing_metadata()))
    return cls(details, code)
