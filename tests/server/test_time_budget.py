"""Time budgets and deadlines over a real loopback server: the stream ends in time with the
best picture so far (a Result marked partial), unless the caller asks for the strict policy."""

from __future__ import annotations

import io
import time

import grpc
from PIL import Image
from styleserve.v1 import style_transfer_pb2 as pb

from tests.server.service_helpers import connect, request, rpc_error, sample

# About 20 s on the tiny network on a 2-core CPU (some 25 ms an iteration at 256x171), far
# longer than any test here waits for it.
LONG = {"size": 256, "iterations": 800}
# Too short for anything but the instant tier's one pass.
NO_TIME = {"time_budget_seconds": 0.001}
# Servers that time jobs warm up first, as deployed ones do: a process's first job pays for
# lazy initialisation (over a second here), which no measurement of its own could foresee.
TIMED = {"job_slots": 1, "queue_size": 0, "warmup": True}


def _progress(responses):
    return [r.progress for r in responses if r.HasField("progress")]


def _assert_best_of_its_stage(result, progress):
    """The result is partial, with the losses of the lowest iterate of the stage it stopped in."""
    assert result.partial
    assert 0 < progress[-1].iteration == result.iterations < progress[-1].total_iterations
    stage = [p for p in progress if p.stage == progress[-1].stage]
    assert result.losses == min(stage, key=lambda p: p.losses.total).losses
    assert Image.open(io.BytesIO(result.image.data)).size == (256, 171)


def _assert_the_slot_is_free(srv, stub):
    assert sample(srv, "styleserve_running_jobs") == 0
    # With no queue, a job is refused outright unless the slot really is free.
    result = list(stub.StyleTransfer(request(), timeout=60))[-1].result
    assert result.stop_reason == pb.STOP_REASON_COMPLETED


def test_a_deadline_ends_the_stream_in_time_with_the_best_picture(start_server):
    with start_server(**TIMED) as srv, connect(srv.target) as stub:
        began = time.monotonic()
        responses = list(stub.StyleTransfer(request(**LONG), timeout=3))
        assert time.monotonic() - began < 3
        result = responses[-1].result
        assert result.stop_reason == pb.STOP_REASON_DEADLINE
        _assert_best_of_its_stage(result, _progress(responses))
        _assert_the_slot_is_free(srv, stub)


def test_a_time_budget_ends_the_stream_the_same_way_without_a_deadline(start_server):
    with start_server(**TIMED) as srv, connect(srv.target) as stub:
        began = time.monotonic()
        responses = list(stub.StyleTransfer(request(**LONG, time_budget_seconds=2.0)))
        seconds = time.monotonic() - began
        result = responses[-1].result
        assert result.stop_reason == pb.STOP_REASON_TIME_BUDGET
        _assert_best_of_its_stage(result, _progress(responses))
        # The budget is used, not wasted on too wide a margin (0.5 s: one slow iteration on a
        # busy machine makes the pace stop early, by design, rather than late).
        assert 0.5 < seconds < 2.0
        assert result.effective_options.time_budget_seconds == 2.0
        _assert_the_slot_is_free(srv, stub)


def test_the_strict_policy_runs_every_iteration_or_fails(start_server):
    with start_server(**TIMED) as srv, connect(srv.target) as stub:
        strict = request(**LONG, deadline_policy=pb.DEADLINE_POLICY_STRICT)
        assert rpc_error(stub.StyleTransfer(strict, timeout=2)).code() is (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
        budget = request(deadline_policy=pb.DEADLINE_POLICY_STRICT, time_budget_seconds=1.0)
        error = rpc_error(stub.StyleTransfer(budget, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "time_budget_seconds" in error.details()


def test_no_time_for_one_iteration_returns_the_instant_picture(server):
    with connect(server.target) as stub:
        responses = list(stub.StyleTransfer(request(**NO_TIME), timeout=60))
        instant = list(stub.StyleTransfer(request(method=pb.METHOD_FEED_FORWARD), timeout=60))
    assert [r.WhichOneof("event") for r in responses] == ["queued", "started", "result"]
    result = responses[-1].result
    assert result.partial and result.stop_reason == pb.STOP_REASON_TIME_BUDGET
    assert result.iterations == 0 and result.losses.total == 0
    assert result.receipt.feed_forward.name == "tiny-arbitrary"
    assert result.image.data == instant[-1].result.image.data


def test_without_the_instant_tier_the_starting_picture_comes_back(start_server):
    with start_server(feed_forward="none") as srv, connect(srv.target) as stub:
        result = list(stub.StyleTransfer(request(**NO_TIME), timeout=60))[-1].result
    assert result.partial and result.stop_reason == pb.STOP_REASON_TIME_BUDGET
    assert result.iterations == 0 and result.losses.total > 0
    assert not result.receipt.HasField("feed_forward")


def test_a_full_run_is_complete_and_not_partial(server):
    with connect(server.target) as stub:
        optimised = list(stub.StyleTransfer(request(time_budget_seconds=60.0), timeout=60))
        instant = list(stub.StyleTransfer(request(method=pb.METHOD_FEED_FORWARD), timeout=60))
    for result in (optimised[-1].result, instant[-1].result):
        assert not result.partial and result.stop_reason == pb.STOP_REASON_COMPLETED
    assert optimised[-1].result.iterations == optimised[1].started.total_iterations
