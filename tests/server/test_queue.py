"""Slots, the queue, cancellation and deadlines, through real calls on a loopback server."""

from __future__ import annotations

import threading

import grpc
import pytest
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import (
    ENDLESS,
    connect,
    kinds,
    next_event,
    request,
    rpc_error,
    sample,
    start_endless,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


def requests(srv, code: str) -> float:
    return sample(srv, "styleserve_requests_total", method="StyleTransfer", code=code)


def test_two_clients_run_at_once_on_two_slots(start_server):
    with start_server(job_slots=2) as srv, connect(srv.target) as stub:
        first = stub.StyleTransfer(request(**ENDLESS), timeout=120)
        second = stub.StyleTransfer(request(**ENDLESS), timeout=120)
        for call in (first, second):
            assert next_event(call, "queued").queued.position == 0
            next_event(call, "progress")
        assert sample(srv, "styleserve_running_jobs") == 2
        first.cancel()
        second.cancel()
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)


def test_two_clients_on_one_slot_both_get_their_result(start_server):
    with start_server(job_slots=1) as srv, connect(srv.target) as stub:
        results: list[pb.StyleTransferResponse] = []

        def run() -> None:
            results.append(list(stub.StyleTransfer(request(iterations=5), timeout=120))[-1])

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert kinds(results) == ["result", "result"]
    waits = sorted(r.result.timings.queue_seconds for r in results)
    assert waits[1] > 0  # one of them waited for the other's slot


def test_queued_callers_hear_their_position_as_it_moves(start_server):
    with start_server(job_slots=1, queue_size=3) as srv, connect(srv.target) as stub:
        running = start_endless(stub)
        waiting = [stub.StyleTransfer(request(**ENDLESS), timeout=120) for _ in range(3)]
        assert [next(call).queued.position for call in waiting] == [0, 1, 2]
        waiting[0].cancel()
        assert next(waiting[1]).queued.position == 0
        assert next(waiting[2]).queued.position == 1
        running.cancel()
        assert next_event(waiting[1], "started").started.queue_seconds > 0
        for call in waiting[1:]:
            call.cancel()
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)
        assert sample(srv, "styleserve_queue_depth") == 0


def test_a_full_queue_refuses_with_a_retry_hint(start_server):
    with start_server(job_slots=1, queue_size=1) as srv, connect(srv.target) as stub:
        running = start_endless(stub)
        waiting = stub.StyleTransfer(request(**ENDLESS), timeout=120)
        next_event(waiting, "queued")
        refused = stub.StyleTransfer(request(), timeout=120)
        error = rpc_error(refused)
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry" in error.details()
        trailers = dict(error.trailing_metadata())
        assert int(trailers["retry-after"]) >= 1
        assert int(trailers["grpc-retry-pushback-ms"]) == 1000 * int(trailers["retry-after"])
        running.cancel()
        waiting.cancel()
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)
    assert requests(srv, "RESOURCE_EXHAUSTED") == 1


def test_cancelling_a_running_job_starts_the_queued_one_at_once(start_server):
    with start_server(job_slots=1, queue_size=1) as srv, connect(srv.target) as stub:
        running = start_endless(stub)
        waiting = stub.StyleTransfer(request(iterations=3), timeout=120)
        assert next(waiting).queued.position == 0
        running.cancel()
        responses = list(waiting)
        assert kinds(responses)[0] == "started"
        assert responses[-1].HasField("result")
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)
    assert sample(srv, "styleserve_job_duration_seconds_count", outcome="cancelled") == 1
    assert sample(srv, "styleserve_job_duration_seconds_count", outcome="finished") == 1
    assert requests(srv, "CANCELLED") == 1


def test_a_deadline_stops_the_job_and_frees_its_slot(start_server):
    with start_server(job_slots=1, queue_size=0) as srv, connect(srv.target) as stub:
        # Strict: under the default policy the job would end in time with a partial result.
        strict = request(**ENDLESS, deadline_policy=pb.DEADLINE_POLICY_STRICT)
        error = rpc_error(stub.StyleTransfer(strict, timeout=2))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: sample(srv, "styleserve_running_jobs") == 0)
        # With no queue, this is refused outright unless the slot really is free.
        assert list(stub.StyleTransfer(request(), timeout=120))[-1].HasField("result")
        wait_until(lambda: requests(srv, "DEADLINE_EXCEEDED") == 1)
    assert requests(srv, "CANCELLED") == 0


def test_a_deadline_while_queued_leaves_the_queue(start_server):
    with start_server(job_slots=1, queue_size=1) as srv, connect(srv.target) as stub:
        running = start_endless(stub)
        error = rpc_error(stub.StyleTransfer(request(), timeout=1))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: sample(srv, "styleserve_queue_depth") == 0)
        running.cancel()
