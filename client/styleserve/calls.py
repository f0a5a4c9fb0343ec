"""What the sync and asyncio clients share of every call, so that they cannot drift apart.

Both clients build their messages, translate failures and follow a job the same way; they
differ only in ``for`` / ``async for`` and ``await``. ``translated`` is the one place where a
gRPC failure becomes a ``styleserve.errors`` exception. ``Calls`` holds the request building
and the memory of registered styles: a job that names a ``style_id`` the server does not hold
(evicted, or another replica behind the balancer) is answered NOT_FOUND before its stream
starts; the client then registers the pictures it kept once more and sends the job again with
those pictures and the style's options. A balancer may send either call to any replica, so
the job carries the pictures rather than the id: it runs wherever it lands, and a replica that
holds the style takes its targets from its cache all the same. A multi-replica deployment so
needs no sticky sessions. A failure after the stream started is never retried.

Pictures too large for a request go first by UploadPicture (``styleserve.uploads`` picks them,
from the server's limits, asked once per client), and a result larger than the client's
largest message comes in chunks that ``JobEvents`` puts back together and checks.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styleserve.channel import Connection
from styleserve.errors import DeadlineExceeded, NotFound, Unavailable, from_rpc_error
from styleserve.events import Event, Result, event_from_proto, missing_result
from styleserve.info import ServerInfo
from styleserve.jobs import job_name
from styleserve.pictures import Picture
from styleserve.regions import Regions
from styleserve.request import Registration, Styles, build_registration, build_request
from styleserve.resume import Attempt, JobPosition, Resumption
from styleserve.uploads import PLAIN_REQUEST_BYTES, Request, ResultAssembly, to_upload
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1.style_transfer_pb2_grpc import StyleTransferServiceStub

__all__ = ["Calls", "JobEvents", "final_result", "translated", "uploading", "watching"]

# A job refused NOT_FOUND is sent once more after its style is registered again, not more.
_ATTEMPTS = 2


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turns a gRPC failure (sync or asyncio) raised inside into its styleserve exception."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


@contextlib.contextmanager
def uploading(data: bytes) -> Iterator[None]:
    """``translated`` for an UploadPicture call of ``data``: a deadline that passes says it
    passed in the upload, which a caller did not ask for by name."""
    try:
        with translated():
            yield
    except DeadlineExceeded as error:
        raise DeadlineExceeded(
            f"the deadline passed while uploading a picture of {len(data) / 2**20:.1f} MiB"
            " (pictures larger than a request go first by UploadPicture): give the call a"
            f" longer timeout ({error.details})",
            request_id=error.request_id,
        ) from error


@contextlib.contextmanager
def watching(resumption: Resumption) -> Iterator[None]:
    """``translated`` for a WatchJob call: one that broke too is left behind for the next
    attempt (``resumption.attempts``), a job its server no longer holds is NotFound saying
    it was lost."""
    try:
        with translated():
            yield
    except Unavailable as error:
        resumption.failed(error)
    except NotFound as error:
        raise resumption.lost(error) from error


def _itself(response: pb.StyleTransferResponse) -> pb.StyleTransferResponse:
    return response


def _watched_event(response: pb.WatchJobResponse) -> pb.StyleTransferResponse:
    return response.event


def final_result(results: list[Result]) -> Result:
    """The Result among a finished stream's events; raises when it ended without one."""
    if not results:
        raise missing_result()
    return results[-1]


class JobEvents:
    """One attempt at a job: its responses as typed events, whether any came, and how far
    they got (``styleserve.resume``), which a reattach carries on from: the pieces of a result
    assembled so far included."""

    ATTEMPTS = range(_ATTEMPTS)

    def __init__(self, position: JobPosition | None = None) -> None:
        self.started = False
        self.position = position or JobPosition()
        self._result = ResultAssembly()

    def event(self, response: pb.StyleTransferResponse) -> Event | None:
        """The event of one response; None for a piece of the result (kept until the Result
        comes), a kind newer than this client (skipped) or one already passed on (replayed
        after a reattach). Raises DataLoss when the result does not match its digest."""
        self.started = True
        if not self.position.is_new(response):
            return None
        if response.WhichOneof("event") == "result_chunk":
            self._result.add(response.result_chunk)
            return None
        event = event_from_proto(response)
        if isinstance(event, Result):
            return self._result.result(event, response.result)
        return event


class Calls(Connection):
    """The base of ``Client`` and ``AsyncClient``: their messages and registered styles."""

    # The server's description, asked for the first request too large to send without knowing
    # its limits, and kept: a server's limits do not change while it runs.
    _server: ServerInfo | None = None

    @functools.cached_property
    def _health(self) -> Any:
        # Any: the type stubs of grpcio-health-checking declare HealthStub without methods.
        self._check_open()
        return health_pb2_grpc.HealthStub(self._channel)

    @functools.cached_property
    def _operations(self) -> Any:
        # Any: the generated stub is untyped (googleapis-common-protos types its messages only).
        self._check_open()
        return operations_pb2_grpc.OperationsStub(self._channel)

    @staticmethod
    def _get_job_request(job_id: str) -> operations_pb2.GetOperationRequest:
        return operations_pb2.GetOperationRequest(name=job_name(job_id))

    @staticmethod
    def _cancel_request(job_id: str) -> operations_pb2.CancelOperationRequest:
        return operations_pb2.CancelOperationRequest(name=job_name(job_id))

    @staticmethod
    def _health_request(service: str) -> health_pb2.HealthCheckRequest:
        return health_pb2.HealthCheckRequest(service=service)

    @staticmethod
    def _health_status(response: health_pb2.HealthCheckResponse) -> str:
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    @functools.cached_property
    def _registrations(self) -> dict[str, Registration]:
        """style_id -> its registration, to register it again where it is missing."""
        return {}

    def _job_request(
        self,
        content: Picture,
        styles: Styles | None,
        init_image: Picture | None,
        request_id: str | None,
        style_id: str | None,
        options: Mapping[str, Any],
        regions: Regions | None = None,
        detachable: bool = False,
    ) -> pb.StyleTransferRequest:
        request = build_request(
            content,
            styles,
            init_image=init_image,
            request_id=request_id,
            style_id=style_id,
            options=options,
            regions=regions,
            detachable=detachable,
        )
        request.delivery.max_message_bytes = self._response_message_bytes
        return request

    def _needs_server(self, message: Request) -> bool:
        """Whether ``message`` is too large to send before the server's limits are known."""
        return self._server is None and message.ByteSize() > PLAIN_REQUEST_BYTES

    def _to_upload(self, message: Request) -> tuple[Request, list[pb.Image]]:
        """``message`` and the pictures of it to upload first (``styleserve.uploads``)."""
        if self._server is None or message.ByteSize() <= PLAIN_REQUEST_BYTES:
            return message, []
        return to_upload(message, self._server)

    def _resumption(
        self,
        request: pb.StyleTransferRequest,
        events: JobEvents,
        error: Unavailable,
        timeout: float | None,
    ) -> Resumption:
        """How to follow the job of ``request`` whose call broke with ``error``; re-raises it
        for a job that is not detachable."""
        deadline = self._call_options(timeout)["timeout"]
        return Resumption.after(events.position, error, deadline, request)

    def _watch(
        self, job_id: str, after_sequence: int, replica: str, timeout: float | None
    ) -> tuple[JobEvents, Resumption]:
        """The events and attempts of ``watch_job``: a reattach that starts without a break."""
        events = JobEvents(JobPosition(job_id, after_sequence, replica))
        return events, Resumption(events.position, None, self._call_options(timeout)["timeout"])

    def _reattach(
        self, attempt: Attempt[StyleTransferServiceStub]
    ) -> tuple[Any, Callable[[Any], pb.StyleTransferResponse]]:
        """The call of ``attempt`` (WatchJob, or the request sent again) and how each of its
        responses holds the job's event."""
        options = self._call_options(attempt.timeout)
        if attempt.resend:
            return attempt.stub.StyleTransfer(attempt.request, **options), _itself
        return attempt.stub.WatchJob(attempt.request, **options), _watched_event

    def _watch_stubs(self, replica: Any) -> list[StyleTransferServiceStub]:
        """Where to watch a job: on its replica's own channel first, when there is one."""
        if replica is None:
            return [self._stub]
        return [StyleTransferServiceStub(replica), self._stub]

    def _remember(self, registration: Registration, style_id: str) -> str:
        self._registrations[style_id] = registration
        return style_id

    def _registration_to_retry(
        self, request: pb.StyleTransferRequest, error: NotFound, events: JobEvents, attempt: int
    ) -> Registration:
        """The registration to send again after ``error`` refused ``request``; re-raises
        ``error`` when there is none (a style registered elsewhere, a second refusal, or a
        failure after the stream started, which is never retried)."""
        registration = self._registrations.get(request.style_id)
        if registration is None or events.started or attempt + 1 >= _ATTEMPTS:
            raise error
        return registration

    @staticmethod
    def _registration(styles: Styles, options: Mapping[str, Any]) -> Registration:
        return build_registration(styles, options)
