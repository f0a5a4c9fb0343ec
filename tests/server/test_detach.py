"""Sequence numbers, detachable jobs and WatchJob over real loopback servers (issue 22)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_server import job_store
from styleserve_server.job_store import MAX_JOB_ID_LENGTH, CancelledById, JobStore, UnknownJob
from styleserve_server.metrics import Metrics

from tests.server.service_helpers import connect, kinds, request, rpc_error, sample

# A job long enough to drop its call in the middle of (several seconds on the tiny network).
LONG = {"iterations": 400}


def _detached(stub: pb_grpc.StyleTransferServiceStub, progress: int = 2, **options):
    """Starts a detachable job, reads until ``progress`` Progress events, then drops the call;
    returns the events read."""
    message = request(**{**LONG, **options})
    message.detachable = True
    # The call's deadline is the job's too (detached or not): room for a busy machine.
    call = stub.StyleTransfer(message, timeout=600)
    seen = []
    for response in call:
        seen.append(response)
        if sum(r.HasField("progress") for r in seen) >= progress:
            break
    call.cancel()
    return seen


def _watch(stub, job_id: str, after: int = 0, **kwargs) -> list[pb.StyleTransferResponse]:
    watch = pb.WatchJobRequest(job_id=job_id, after_sequence=after)
    return [r.event for r in stub.WatchJob(watch, timeout=600, **kwargs)]


def _jobs_info(stub) -> pb.JobStoreInfo:
    return stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).jobs


def test_every_event_of_a_plain_job_is_numbered_from_one(server):
    with connect(server.target) as stub:
        delivery = pb.DeliveryOptions(preview_every=1, preview_size=24)
        responses = list(stub.StyleTransfer(request(iterations=4, delivery=delivery), timeout=60))
    assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))
    started = responses[kinds(responses).index("started")].started
    assert started.job_id == "" and started.replica == ""


def test_result_chunks_are_numbered_too(server):
    # A big result in small messages: chunks, then the Result, all numbered on.
    delivery = pb.DeliveryOptions(max_message_bytes=64 * 1024)
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(size=256, delivery=delivery), timeout=120))
    assert "result_chunk" in kinds(responses)
    assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))


def test_a_dropped_detachable_job_runs_on_and_is_watched_from_another_channel(start_server):
    with start_server(advertise_address="10.0.0.7:50051") as srv:
        with connect(srv.target) as stub:
            seen = _detached(stub)
        started = next(r.started for r in seen if r.HasField("started"))
        assert len(started.job_id) >= 32 and started.replica == "10.0.0.7:50051"
        last = seen[-1].sequence
        with connect(srv.target) as other:
            rest = _watch(other, started.job_id, after=last)
            replay = _watch(other, started.job_id)
        # Each event once, in order, right after the last one seen (no previews: none dropped).
        assert [r.sequence for r in rest] == list(range(last + 1, last + 1 + len(rest)))
        total = started.total_iterations
        assert kinds(rest)[-1] == "result" and rest[-1].result.iterations == total
        progress = [r.progress.iteration for r in seen + rest if r.HasField("progress")]
        assert progress == list(range(1, total + 1))
        # From 0: everything kept since Started (the queue's events were never kept).
        assert kinds(replay)[0] == "started" and replay[0].started.job_id == started.job_id
        assert replay[-1] == rest[-1]
        assert sample(srv, "styleserve_jobs_detached_total") == 1
        assert sample(srv, "styleserve_jobs_reattached_total") == 2


def test_a_watch_from_the_future_is_out_of_range_and_bad_ids_not_found(server):
    with connect(server.target) as stub:
        seen = _detached(stub)
        job_id = next(r.started.job_id for r in seen if r.HasField("started"))
        with pytest.raises(grpc.RpcError) as error:
            _watch(stub, job_id, after=10**9)
        assert error.value.code() is grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(grpc.RpcError) as unknown:
            _watch(stub, "x" * 32)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        long_id = "y" * (MAX_JOB_ID_LENGTH + 1)
        with pytest.raises(grpc.RpcError) as too_long:
            _watch(stub, long_id)
        assert too_long.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert long_id not in too_long.value.details()
        # A watcher's cancel leaves the job running: the next watch gets its result.
        call = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60)
        next(call)
        call.cancel()
        assert kinds(_watch(stub, job_id))[-1] == "result"


def test_another_callers_job_is_not_found_like_an_unknown_one():
    async def check() -> None:
        store = JobStore(2**20, 60, 60, Metrics())
        kept = store.open("alice")

        async def produce(send):
            await send(pb.StyleTransferResponse(sequence=1, started=pb.Started()))

        store.run(kept, produce)
        await asyncio.sleep(0)
        assert store.find(kept.job_id, "alice", 0) is kept
        with pytest.raises(UnknownJob) as other:
            store.find(kept.job_id, "bob", 0)
        with pytest.raises(UnknownJob) as unknown:
            store.find("nope", "alice", 0)
        assert str(other.value) == str(unknown.value)
        store.close()

    asyncio.run(check())


def test_a_job_cancelled_by_id_before_its_first_step_is_kept_as_cancelled_then_expires():
    async def check() -> None:
        store = JobStore(2**20, 60, 0, Metrics())  # retention 0: expires at once when finished
        kept = store.open("alice", "request-1")
        ran = []

        async def produce(send):
            ran.append(True)

        store.run(kept, produce)
        store.cancel(kept)  # in the same step: the task has not begun
        await asyncio.sleep(0.05)
        assert ran == [] and kept.done and isinstance(kept.error, CancelledById)
        # Finished like any job: its retention ran out and the store holds nothing of it.
        with pytest.raises(UnknownJob):
            store.find(kept.job_id, "alice")
        assert store.resubmitted("alice", "request-1") is None and store.info().used_bytes == 0

    asyncio.run(check())


def test_a_token_binds_the_job_to_its_caller(start_server):
    with start_server(auth_token="s3cret") as srv:
        good = (("authorization", "Bearer s3cret"),)
        with connect(srv.target) as stub:
            message = request()
            message.detachable = True
            responses = list(stub.StyleTransfer(message, timeout=60, metadata=good))
            job_id = next(r.started.job_id for r in responses if r.HasField("started"))
            assert _watch(stub, job_id, metadata=good)[-1] == responses[-1]
            wrong = (("authorization", "Bearer other"),)
            error = rpc_error(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=wrong))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_finished_result_expires_after_its_retention(start_server):
    with start_server(job_retention_seconds=1) as srv, connect(srv.target) as stub:
        message = request()
        message.detachable = True
        responses = list(stub.StyleTransfer(message, timeout=60))
        job_id = next(r.started.job_id for r in responses if r.HasField("started"))
        info = _jobs_info(stub)
        assert info.used_bytes > 0 and info.retention_seconds == 1 and info.max_bytes > 0
        assert _watch(stub, job_id)[-1] == responses[-1]
        time.sleep(1.5)
        error = rpc_error(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10))
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert _jobs_info(stub).used_bytes == 0
        assert sample(srv, "styleserve_jobs_expired_total", reason="retention") == 1


def _slot_frees(stub, within: float) -> float:
    """Seconds until a quick job gets the (only) slot of a server with no queue."""
    began = time.monotonic()
    while True:
        try:
            list(stub.StyleTransfer(request(), timeout=60))
            return time.monotonic() - began
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - began < within, "the slot never freed"
            time.sleep(0.05)


def test_an_unwatched_detached_job_is_cancelled_after_its_grace(start_server):
    settings = {"job_slots": 1, "queue_size": 0, "detach_grace_seconds": 1}
    with start_server(**settings) as srv, connect(srv.target) as stub:
        seen = _detached(stub, iterations=2000)
        job_id = next(r.started.job_id for r in seen if r.HasField("started"))
        with pytest.raises(grpc.RpcError) as busy:
            list(stub.StyleTransfer(request(), timeout=60))
        assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        waited = _slot_frees(stub, within=10)
        assert 0.5 < waited < 10
        # Kept, cancelled, saying why: a caller back late learns what became of its job.
        error = rpc_error(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10))
        assert error.code() is grpc.StatusCode.CANCELLED
        assert "nobody watched it for its detach grace of 1 s" in error.details()
        assert sample(srv, "styleserve_jobs_unwatched_total") == 1


def test_a_dropped_plain_job_frees_its_slot_at_once(start_server):
    with start_server(job_slots=1, queue_size=0) as srv, connect(srv.target) as stub:
        call = stub.StyleTransfer(request(iterations=2000), timeout=60)
        for response in call:
            if response.HasField("progress"):
                break
        call.cancel()
        # The quick job's own run is in the figure; a 2000-iteration job would take far longer.
        assert _slot_frees(stub, within=5) < 4


def test_a_job_id_never_starts_with_a_dash(monkeypatch):
    """``styleserve jobs watch ID`` would take such an id for an option: it is drawn again."""
    drawn = iter(["-looks-like-a-flag", "a-fine-id"])
    monkeypatch.setattr(job_store.secrets, "token_urlsafe", lambda _: next(drawn))
    store = JobStore(2**20, 60, 60, Metrics())
    assert store.open("alice").job_id == "a-fine-id"


def test_a_server_that_keeps_no_jobs_refuses_a_detachable_request_before_checking_it(
    start_server,
):
    # Before the request's check, which may decode region masks of up to 40 MP: the content
    # here is not even a picture, and the refusal is still the store's.
    with start_server(job_store_bytes=0) as srv, connect(srv.target) as stub:
        message = request(content=b"not a picture")
        message.detachable = True
        error = rpc_error(stub.StyleTransfer(message, timeout=60))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert error.details().startswith("detachable: this server keeps no detachable jobs")
        message.detachable = False
        refused = rpc_error(stub.StyleTransfer(message, timeout=60))
        assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert sample(srv, "styleserve_job_store_entries") == 0
