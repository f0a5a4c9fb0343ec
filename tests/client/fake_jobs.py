"""A stand-in server for the SDK's reattach tests: detachable jobs without a network to run.

The SDK's half of reattaching (sequence numbers, WatchJob, backoff, the replica's channel) is
tested against this as well as against the real server: here the job's events, the moment a
connection drops (``drop_before``: just before the event with that sequence number is sent,
so a drop lands between two chunks of the result as surely as between two Progress events)
and whether the server still holds the job are the test's to choose, and nothing is slow.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Iterator

import grpc
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc

__all__ = ["ITERATIONS", "JOB_ID", "RESULT_BYTES", "FakeJobs"]

ITERATIONS = 8
RESULT_BYTES = bytes(range(256)) * 12
_CHUNK_BYTES = 1000
JOB_ID = "job-0123456789abcdef"


def _events(replica: str) -> list[pb.StyleTransferResponse]:
    """Started, ITERATIONS Progress events, the result in chunks, then the Result."""
    events = [
        pb.StyleTransferResponse(
            started=pb.Started(
                device="cpu", total_iterations=ITERATIONS, job_id=JOB_ID, replica=replica
            )
        )
    ]
    for i in range(1, ITERATIONS + 1):
        progress = pb.Progress(iteration=i, total_iterations=ITERATIONS)
        events.append(pb.StyleTransferResponse(progress=progress))
    for offset in range(0, len(RESULT_BYTES), _CHUNK_BYTES):
        chunk = pb.ImageChunk(offset=offset, data=RESULT_BYTES[offset : offset + _CHUNK_BYTES])
        events.append(pb.StyleTransferResponse(result_chunk=chunk))
    result = pb.Result(
        width=4,
        height=4,
        iterations=ITERATIONS,
        image_sha256=hashlib.sha256(RESULT_BYTES).hexdigest(),
        image_size_bytes=len(RESULT_BYTES),
    )
    events.append(pb.StyleTransferResponse(result=result))
    for sequence, event in enumerate(events, start=1):
        event.sequence = sequence
    return events


class FakeJobs(pb_grpc.StyleTransferServiceServicer):
    """One job at a time, its events kept for WatchJob (``forget`` drops it: the replica
    restarted); ``drop_before`` maps a sequence number to what to do just before sending it
    (e.g. ``proxy.drop``). ``advertise``: Started.replica is this server's own address."""

    def __init__(self, *, advertise: bool = False) -> None:
        self.drop_before: dict[int, Callable[[], object]] = {}
        self.jobs_run = 0
        self.watches = 0
        self.resends = 0
        self._request_ids: set[str] = set()
        self.forget = False
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_StyleTransferServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"
        self._events = _events(self.target if advertise else "")
        self._server.start()

    def close(self) -> None:
        self._server.stop(0)

    def StyleTransfer(  # noqa: N802 - gRPC's method name
        self, request: pb.StyleTransferRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StyleTransferResponse]:
        if request.detachable and request.request_id in self._request_ids:
            # Sent again (the server's request-id rule): its job, followed from its start.
            self.resends += 1
        else:
            self.jobs_run += 1
            self._request_ids.add(request.request_id)
        events = self._events if request.detachable else self._plain_events()
        yield from self._send(events, 0, context)

    def WatchJob(  # noqa: N802 - gRPC's method name
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchJobResponse]:
        self.watches += 1
        if self.forget or request.job_id != JOB_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        for event in self._send(self._events, request.after_sequence, context):
            yield pb.WatchJobResponse(event=event)

    def _plain_events(self) -> list[pb.StyleTransferResponse]:
        """The job's events as a server sends a job that is not detachable (no id)."""
        plain = [type(event)() for event in self._events]
        for copy, event in zip(plain, self._events, strict=True):
            copy.CopyFrom(event)
        plain[0].started.job_id = ""
        plain[0].started.replica = ""
        return plain

    def _send(
        self, events: list[pb.StyleTransferResponse], after: int, context: grpc.ServicerContext
    ) -> Iterator[pb.StyleTransferResponse]:
        for event in events[after:]:
            drop = self.drop_before.pop(event.sequence, None)
            if drop is not None:
                # The caller reads what came before first (a reset loses what is unread, even
                # Started, and these tests are about what follows a break, not a lost start).
                time.sleep(0.3)
                drop()
                # The connection is gone; the job goes on without this call.
                while context.is_active():
                    time.sleep(0.01)
                return
            time.sleep(0.002)
            yield event
