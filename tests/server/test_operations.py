"""google.longrunning.Operations over detachable jobs, resubmitted requests and the store's end
at a server's stop, over real loopback servers (issue 22)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import grpc
import pytest
from google.longrunning import operations_pb2 as lro
from google.longrunning import operations_pb2_grpc as lro_grpc
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve.v1 import style_transfer_pb2_grpc as pb_grpc
from styleserve_server import logs, outputs
from styleserve_server.job_store import JobStore, UnknownJob
from styleserve_server.metrics import Metrics
from styleserve_server.operations import JobOperations

from tests.server.service_helpers import kinds, request, rpc_error, sample, wait_until

# Far longer than any test waits for it: it ends by a cancel or the server's stop.
ENDLESS = {"iterations": 5000}


@contextlib.contextmanager
def stubs(target: str):
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.StyleTransferServiceStub(channel), lro_grpc.OperationsStub(channel)


def detachable(request_id: str = "", **options) -> pb.StyleTransferRequest:
    message = request(**options)
    message.detachable, message.request_id = True, request_id
    return message


def started_and_left(stub, **options) -> str:
    """Starts a detachable job, leaves its call after the first Progress; its job id."""
    call = stub.StyleTransfer(detachable(**options), timeout=600)
    job_id = ""
    for response in call:
        if response.HasField("started"):
            job_id = response.started.job_id
        if response.HasField("progress"):
            break
    call.cancel()
    return job_id


def name(job_id: str) -> str:
    return f"jobs/{job_id}"


def test_get_list_and_cancel_by_id_and_the_slot_frees(start_server):
    with start_server(job_slots=1, queue_size=1) as srv, stubs(srv.target) as (stub, ops):
        job_id = started_and_left(stub, **ENDLESS)
        running = ops.GetOperation(lro.GetOperationRequest(name=name(job_id)), timeout=10)
        assert running.name == name(job_id) and not running.done
        progress = pb.Progress()
        assert running.metadata.Unpack(progress) and progress.iteration >= 1
        listed = ops.ListOperations(lro.ListOperationsRequest(), timeout=10)
        assert [o.name for o in listed.operations] == [name(job_id)]
        ops.CancelOperation(lro.CancelOperationRequest(name=name(job_id)), timeout=10)
        # The slot frees as a cancelled job's does (within an iteration): the next job, queued
        # behind it, runs long before the cancelled one could have ended.
        assert kinds(stub.StyleTransfer(request(), timeout=30))[-1] == "result"
        ended = ops.GetOperation(lro.GetOperationRequest(name=name(job_id)), timeout=10)
        assert ended.done and ended.error.code == grpc.StatusCode.CANCELLED.value[0]
        assert sample(srv, "styleserve_jobs_cancelled_total") == 1
        # A watch of the cancelled job ends as its own call did.
        error = rpc_error(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10))
        assert error.code() is grpc.StatusCode.CANCELLED


def test_a_finished_job_its_result_without_the_picture_wait_and_delete(start_server):
    with start_server(job_retention_seconds=1) as srv, stubs(srv.target) as (stub, ops):
        call = stub.StyleTransfer(detachable(iterations=30), timeout=60)
        job_id = next(r.started.job_id for r in call if r.HasField("started"))
        waited = ops.WaitOperation(
            lro.WaitOperationRequest(name=name(job_id), timeout={"seconds": 60}), timeout=90
        )
        sent = [r for r in call if r.HasField("result")][-1].result
        assert waited.done and waited.HasField("response")
        result = pb.Result()
        waited.response.Unpack(result)
        assert result.image.data == b"" and result.image_sha256 == sent.image_sha256
        assert result.iterations == sent.iterations
        progress = pb.Progress()
        waited.metadata.Unpack(progress)
        assert progress.iteration == sent.iterations
        ops.DeleteOperation(lro.DeleteOperationRequest(name=name(job_id)), timeout=10)
        with pytest.raises(grpc.RpcError) as gone:
            ops.GetOperation(lro.GetOperationRequest(name=name(job_id)), timeout=10)
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND
        assert sample(srv, "styleserve_jobs_expired_total", reason="deleted") == 1


def test_expired_unknown_and_malformed_names(start_server):
    with start_server(job_retention_seconds=1) as srv, stubs(srv.target) as (stub, ops):
        responses = list(stub.StyleTransfer(detachable(), timeout=60))
        job_id = next(r.started.job_id for r in responses if r.HasField("started"))
        assert ops.GetOperation(lro.GetOperationRequest(name=name(job_id)), timeout=10).done
        wait_until(lambda: sample(srv, "styleserve_jobs_expired_total", reason="retention") == 1)
        codes = {}
        for asked in (name(job_id), name("x" * 32), "jobs/", "operations/" + "z" * 5000):
            with pytest.raises(grpc.RpcError) as error:
                ops.GetOperation(lro.GetOperationRequest(name=asked), timeout=10)
            codes[asked[:12]] = error.value.code()
            assert "z" * 100 not in (error.value.details() or "")
            # The field the caller sent: an Operations request names its job by ``name``.
            assert (error.value.details() or "").startswith("name: ")
        assert codes == {
            name(job_id)[:12]: grpc.StatusCode.NOT_FOUND,
            name("x" * 32)[:12]: grpc.StatusCode.NOT_FOUND,
            "jobs/": grpc.StatusCode.NOT_FOUND,
            "operations/z": grpc.StatusCode.INVALID_ARGUMENT,
        }
        # A superscript two is a digit to str.isdigit(), not to int().
        for token in ("nope", "\u00b2", "1" * 21):
            with pytest.raises(grpc.RpcError) as bad_token:
                ops.ListOperations(lro.ListOperationsRequest(page_token=token), timeout=10)
            assert bad_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert bad_token.value.details().startswith("page_token: ")


def test_a_wait_longer_than_any_is_the_longest_and_a_negative_one_refused(start_server):
    with start_server() as srv, stubs(srv.target) as (stub, ops):
        responses = list(stub.StyleTransfer(detachable(iterations=2), timeout=60))
        job_id = next(r.started.job_id for r in responses if r.HasField("started"))
        # More seconds than a valid Duration holds, or a timedelta: only long.
        longest = lro.WaitOperationRequest(name=name(job_id), timeout={"seconds": 2**63 - 1})
        assert ops.WaitOperation(longest, timeout=30).done
        negative = lro.WaitOperationRequest(name=name(job_id), timeout={"seconds": -1})
        with pytest.raises(grpc.RpcError) as error:
            ops.WaitOperation(negative, timeout=30)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("timeout: is negative")


def test_pages_of_a_callers_jobs(start_server):
    with start_server() as srv, stubs(srv.target) as (stub, ops):
        ids = []
        for _ in range(3):
            responses = list(stub.StyleTransfer(detachable(), timeout=60))
            ids.append(next(r.started.job_id for r in responses if r.HasField("started")))
        # A plain job is nobody's operation.
        list(stub.StyleTransfer(request(), timeout=60))
        seen, token, pages = [], "", 0
        while True:
            page = ops.ListOperations(
                lro.ListOperationsRequest(page_size=2, page_token=token), timeout=10
            )
            seen += [o.name for o in page.operations]
            pages, token = pages + 1, page.next_page_token
            if not token:
                break
        assert seen == [name(i) for i in ids] and pages == 2


def test_another_caller_neither_sees_gets_nor_cancels_the_job():
    """Callers differ by token digest or client certificate (``access.caller_identity``): the
    store and its Operations are called with two identities directly."""

    async def check() -> None:
        store = JobStore(2**20, 60, 60, Metrics())
        operations = JobOperations(store)
        kept = store.open("alice", "request-1")
        going = asyncio.Event()

        async def produce(send):
            await send(pb.StyleTransferResponse(sequence=1, started=pb.Started()))
            going.set()
            await asyncio.Event().wait()

        store.run(kept, produce)
        await going.wait()
        get, cancel = operations.handles["GetOperation"], operations.handles["CancelOperation"]
        listing = operations.handles["ListOperations"]
        asked = lro.GetOperationRequest(name=name(kept.job_id))
        assert not (await get(asked, "alice", None)).done
        for handle, message in (
            (get, asked),
            (cancel, lro.CancelOperationRequest(name=asked.name)),
        ):
            with pytest.raises(UnknownJob):
                await handle(message, "bob", None)
        assert not (await listing(lro.ListOperationsRequest(), "bob", None)).operations
        assert store.resubmitted("bob", "request-1") is None
        assert store.resubmitted("alice", "request-1") is kept
        assert not kept.done
        store.close()

    asyncio.run(check())


def test_a_request_sent_again_follows_its_job_instead_of_running_another(start_server):
    with start_server() as srv, stubs(srv.target) as (stub, _):
        first = stub.StyleTransfer(detachable("same-request", iterations=40), timeout=60)
        for response in first:
            if response.HasField("progress"):
                break
        first.cancel()
        again = list(stub.StyleTransfer(detachable("same-request", iterations=40), timeout=60))
        assert kinds(again)[0] == "started" and kinds(again)[-1] == "result"
        total = again[0].started.total_iterations
        progress = [r.progress.iteration for r in again if r.HasField("progress")]
        assert progress == list(range(1, total + 1))
        # One job ran: its iterations once.
        assert sample(srv, "styleserve_iterations_total") == total
        assert sample(srv, "styleserve_jobs_resubmitted_total") == 1
        # Another request id is another job.
        other = list(stub.StyleTransfer(detachable("other-request"), timeout=60))
        more = other[kinds(other).index("started")].started.total_iterations
        assert sample(srv, "styleserve_iterations_total") == total + more


def test_a_stopping_server_ends_a_watch_of_a_kept_job_unavailable(start_server):
    with start_server() as srv, stubs(srv.target) as (stub, _):
        job_id = started_and_left(stub, **ENDLESS)
        watch = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120)
        next(watch)
        codes = []

        def follow() -> None:
            codes.append(rpc_error(watch).code())

        watcher = threading.Thread(target=follow)
        watcher.start()
        srv.stop(0)
        watcher.join(timeout=30)
        assert codes == [grpc.StatusCode.UNAVAILABLE]
        assert sample(srv, "styleserve_job_store_entries") == 0


@pytest.fixture
def broken_result(monkeypatch, caplog):
    """Every job fails with a bug as it makes its result; the errors logged are captured."""

    def broken(*_args: object, **_kwargs: object) -> pb.Result:
        raise RuntimeError("a bug in making the result")

    monkeypatch.setattr(outputs, "result", broken)
    caplog.set_level(logging.ERROR)


def test_a_detached_job_that_fails_is_logged_under_the_id_its_status_names(
    start_server, broken_result, caplog
):
    caplog.handler.addFilter(logs._RequestIdFilter())
    with start_server() as srv, stubs(srv.target) as (stub, ops):
        job_id = started_and_left(stub, iterations=30)
        ask = lro.GetOperationRequest(name=name(job_id))
        wait_until(lambda: ops.GetOperation(ask, timeout=10).done)
        error = ops.GetOperation(ask, timeout=10).error
    assert error.code == grpc.StatusCode.INTERNAL.value[0]
    assert error.message.startswith("internal error (RuntimeError); the server log has it under ")
    named = error.message.rsplit(" ", 1)[1]
    (failed,) = [r for r in caplog.records if r.getMessage() == "detachable job failed"]
    assert (failed.request_id, failed.job_id) == (named, job_id)
    assert "a bug in making the result" in caplog.text


def test_a_followed_job_that_fails_is_logged_once_by_the_call_that_follows_it(
    start_server, broken_result, caplog
):
    with start_server() as srv, stubs(srv.target) as (stub, _):
        error = rpc_error(stub.StyleTransfer(detachable(iterations=2), timeout=600))
    assert error.code() is grpc.StatusCode.INTERNAL
    (failed,) = [r for r in caplog.records if r.exc_info]
    assert failed.getMessage() == "StyleTransfer failed", caplog.text
