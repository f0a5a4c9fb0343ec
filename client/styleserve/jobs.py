"""A caller's detachable jobs as typed records, from the server's google.longrunning.Operations.

The server describes each job it keeps as an ``Operation`` (its ``operations`` module): a name
``jobs/<job_id>``, the newest ``Progress`` packed in ``metadata``, and once done the ``Result``
(without its picture) packed in ``response`` or a ``google.rpc.Status`` in ``error``. Callers
should not unpack ``Any``s: ``JobStatus`` is that Operation in the SDK's own types, its error a
``styleserve.errors`` exception like any failed call's. The request messages live here too, so
that the sync and asyncio clients make the same calls (``styleserve.calls``).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.longrunning import operations_pb2

from styleserve.errors import Cancelled, StyleserveError, from_status
from styleserve.events import Progress, Result, event_from_proto
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["JOB_STATES", "JobStatus", "add_page", "job_name", "list_request"]

_PREFIX = "jobs/"
# What a job is doing: running, or how it ended.
JOB_STATES = ("running", "succeeded", "failed", "cancelled")


def job_name(job_id: str) -> str:
    """The Operation name of the job ``job_id`` (``Started.job_id``)."""
    return _PREFIX + job_id


def list_request(page_token: str) -> operations_pb2.ListOperationsRequest:
    """One page of the caller's jobs, the server's page size (its bound)."""
    return operations_pb2.ListOperationsRequest(page_token=page_token)


def add_page(jobs: list[JobStatus], page: operations_pb2.ListOperationsResponse) -> str:
    """Adds a ListOperations page's jobs to ``jobs``; the next page's token ("": the last)."""
    jobs.extend(JobStatus.from_operation(operation) for operation in page.operations)
    return str(page.next_page_token)


@dataclass(frozen=True)
class JobStatus:
    """A detachable job as its server keeps it. ``state`` is one of JOB_STATES; ``progress``
    the newest Progress (None before the first iteration); ``result`` the Result *without its
    picture* (``data`` is b"": ``watch_job`` brings the picture) once it succeeded; ``error``
    what failed or cancelled it."""

    job_id: str
    state: str
    progress: Progress | None = None
    result: Result | None = None
    error: StyleserveError | None = None

    @property
    def done(self) -> bool:
        return self.state != "running"

    @classmethod
    def from_operation(cls, operation: operations_pb2.Operation) -> JobStatus:
        job_id = operation.name.removeprefix(_PREFIX)
        progress = None
        if operation.HasField("metadata"):
            shown = pb.Progress()
            operation.metadata.Unpack(shown)
            event = event_from_proto(pb.StyleTransferResponse(progress=shown))
            progress = event if isinstance(event, Progress) else None
        if not operation.done:
            return cls(job_id, "running", progress)
        if operation.HasField("error"):
            error = from_status(operation.error.code, operation.error.message)
            state = "cancelled" if isinstance(error, Cancelled) else "failed"
            return cls(job_id, state, progress, error=error)
        ended = pb.Result()
        operation.response.Unpack(ended)
        event = event_from_proto(pb.StyleTransferResponse(result=ended))
        return cls(job_id, "succeeded", progress, event if isinstance(event, Result) else None)
