"""google.longrunning.Operations over the detachable jobs of ``job_store``.

A caller that comes back to its jobs (another process, a dashboard, ``styleserve jobs``) wants
to ask how one is doing, list them and cancel one by id without following its events. The
standard longrunning API says that in a shape gRPC tooling already speaks, so it is served
beside StyleTransferService rather than as RPCs of styleserve's own. An operation is one job:

- ``name`` is ``jobs/<job_id>`` (``Started.job_id``);
- ``metadata`` is the job's newest ``Progress`` (absent before its first iteration);
- ``done`` with ``response``: the job's ``Result`` *without* its picture's bytes, whether the
  job sent them whole or in chunks: answers stay small (a list of them too), and
  ``image_sha256`` and ``image_size_bytes`` describe what ``WatchJob`` delivers;
- ``done`` with ``error``: the status the job's own call ended with (CANCELLED for a job
  cancelled by id).

Only the caller's own jobs exist here: an unknown, expired or another caller's id is NOT_FOUND
alike. CancelOperation stops a running job (its slot frees as a cancelled job's does) and
keeps it, cancelled, for the retention time; DeleteOperation forgets a finished job early,
freeing what it holds (a running one is FAILED_PRECONDITION: cancel it first); WaitOperation
waits for the job's end for at most the request's timeout, the call's deadline and
MAX_WAIT_SECONDS, whichever is first, then answers as GetOperation does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from styleserve.options import OptionsError
from styleserve.v1 import style_transfer_pb2 as pb

from styleserve_server import logs
from styleserve_server.job_store import MAX_JOB_ID_LENGTH, JobStore, KeptJob
from styleserve_server.status import status

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_SECONDS",
    "NAME_PREFIX",
    "OPERATIONS_SERVICE",
    "Handle",
    "JobOperations",
]

OPERATIONS_SERVICE = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
NAME_PREFIX = "jobs/"
# The collection ListOperations lists (its ``name``; "" means the same).
_COLLECTION = "jobs"
DEFAULT_PAGE_SIZE = 50
# A larger page_size is taken as this (AIP-158): a page stays a bounded answer.
MAX_PAGE_SIZE = 100
# The longest WaitOperation holds a call, deadline or no deadline.
MAX_WAIT_SECONDS = 300.0
# Answered this long before the call's deadline, so that the answer still reaches the caller.
_DEADLINE_MARGIN_SECONDS = 0.5
# Page tokens are a job's place in the store's order: a decimal number.
_MAX_TOKEN_LENGTH = 20

# One method: (its request, the caller's identity, the call's remaining seconds) -> its answer.
Handle = Callable[[Any, str, "float | None"], Awaitable[Message]]


class JobOperations:
    """The Operations methods on one server's job store, for a caller identity each call."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs
        self.handles: dict[str, Handle] = {
            "GetOperation": self._get,
            "ListOperations": self._list,
            "CancelOperation": self._cancel,
            "DeleteOperation": self._delete,
            "WaitOperation": self._wait,
        }

    def _find(self, name: str, owner: str) -> KeptJob:
        if not name.startswith(NAME_PREFIX) or len(name) > len(NAME_PREFIX) + MAX_JOB_ID_LENGTH:
            # Not echoed: the caller knows what it sent, and a long value is no job's name.
            raise OptionsError("name", f"is not a job's name: send {NAME_PREFIX}<Started.job_id>")
        return self._jobs.find(name.removeprefix(NAME_PREFIX), owner, field="name")

    async def _get(
        self, request: operations_pb2.GetOperationRequest, owner: str, remaining: float | None
    ) -> operations_pb2.Operation:
        return operation(self._find(request.name, owner))

    async def _list(
        self, request: operations_pb2.ListOperationsRequest, owner: str, remaining: float | None
    ) -> operations_pb2.ListOperationsResponse:
        if request.name not in ("", _COLLECTION):
            raise OptionsError("name", f"lists the collection {_COLLECTION!r} (or leave it empty)")
        if request.filter:
            raise OptionsError("filter", "is not supported: leave it empty (every job is listed)")
        if request.page_size < 0:
            raise OptionsError("page_size", f"is {request.page_size}; send 0 or more")
        token = request.page_token
        # ASCII digits only: str.isdigit() takes superscripts too, which int() refuses.
        if token and (len(token) > _MAX_TOKEN_LENGTH or not (token.isascii() and token.isdigit())):
            raise OptionsError("page_token", "is no token of this server's: send the last answer's")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        jobs = self._jobs.listed(owner, int(token or 0), size + 1)
        answer = operations_pb2.ListOperationsResponse(
            operations=[operation(kept) for kept in jobs[:size]]
        )
        if len(jobs) > size:
            answer.next_page_token = str(jobs[size - 1].number)
        return answer

    async def _cancel(
        self, request: operations_pb2.CancelOperationRequest, owner: str, remaining: float | None
    ) -> empty_pb2.Empty:
        self._jobs.cancel(self._find(request.name, owner))
        return empty_pb2.Empty()

    async def _delete(
        self, request: operations_pb2.DeleteOperationRequest, owner: str, remaining: float | None
    ) -> empty_pb2.Empty:
        self._jobs.forget(self._find(request.name, owner))
        return empty_pb2.Empty()

    async def _wait(
        self, request: operations_pb2.WaitOperationRequest, owner: str, remaining: float | None
    ) -> operations_pb2.Operation:
        kept = self._find(request.name, owner)
        # From its fields: a Duration past timedelta's range (any int64 seconds) is only long.
        asked = request.timeout.seconds + request.timeout.nanos / 1e9
        if asked < 0:
            raise OptionsError("timeout", "is negative; send a duration of 0 or more")
        waits = [asked or MAX_WAIT_SECONDS, MAX_WAIT_SECONDS]
        if remaining is not None:
            waits.append(remaining - _DEADLINE_MARGIN_SECONDS)
        try:
            await asyncio.wait_for(kept.ended.wait(), max(0.0, min(waits)))
        except asyncio.TimeoutError:
            pass
        return operation(kept)


def operation(kept: KeptJob) -> operations_pb2.Operation:
    """The Operation that describes ``kept`` now (see the module's docstring)."""
    answer = operations_pb2.Operation(name=NAME_PREFIX + kept.job_id, done=kept.done)
    if kept.progress is not None:
        answer.metadata.Pack(kept.progress)
    if not kept.done:
        return answer
    if kept.error is not None:
        answer.error.CopyFrom(_error(kept))
    elif kept.result is not None:
        result = pb.Result()
        result.CopyFrom(kept.result)
        result.image.ClearField("data")
        answer.response.Pack(result)
    return answer


def _error(kept: KeptJob) -> status_pb2.Status:
    """The status ``kept``'s own call ended with (or would have, had it stayed)."""
    assert kept.error is not None
    # The job's own request id names its log lines, not this call's.
    token = logs.request_id.set(kept.request_id)
    try:
        code, message, _ = status(kept.error)
    finally:
        logs.request_id.reset(token)
    return status_pb2.Status(code=code.value[0], message=message)
