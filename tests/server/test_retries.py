"""Calls refused before their stream starts are retried by the client channel's gRPC retry
policy after the server's pushback; a job whose stream started is never sent twice."""

from __future__ import annotations

import concurrent.futures
import math

import pytest
from styleserve import Cancelled, Client, ResourceExhausted, Unavailable
from styleserve.events import Started
from styleserve.options import PRESETS
from styleserve_server.engine.precision import expected_job_seconds

from tests.server.service_helpers import encoded, picture, sample, wait_until

QUICK = {"size": 32, "iterations": 2}


@pytest.fixture
def content() -> bytes:
    return encoded(picture((48, 32)))


@pytest.fixture
def style() -> bytes:
    return encoded(picture((40, 40)))


def _refusals(srv) -> float:
    return sample(
        srv, "styleserve_requests_total", method="StyleTransfer", code="RESOURCE_EXHAUSTED"
    )


def _started(client, content, style):
    """A job holding the only slot, and its event stream."""
    events = client.stream(content, style, size=48, iterations=5000, scales=[1.0])
    next(e for e in events if isinstance(e, Started))
    return events


def test_a_refused_call_is_retried_after_the_servers_pushback(start_server, content, style):
    with (
        start_server(job_slots=1, queue_size=0) as srv,
        Client(srv.target) as client,
        Client(srv.target, retries=0) as no_retry,
        Client(srv.target) as retrying,
    ):
        client.stylize(content, style, **QUICK)
        holder = _started(client, content, style)
        with pytest.raises(ResourceExhausted) as refused:
            no_retry.stylize(content, style, **QUICK)
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            retried = pool.submit(retrying.stylize, content, style, **QUICK)
            # Its first attempt is refused too; the retry comes after the pushback.
            wait_until(lambda: _refusals(srv) >= 2)
            holder.close()
            assert retried.result(timeout=60).width == QUICK["size"]
        assert _refusals(srv) == 2


def test_a_job_that_started_is_not_sent_again(start_server, content, style):
    with start_server(job_slots=1, queue_size=0) as srv, Client(srv.target) as client:
        events = _started(client, content, style)
        srv.stop(0)
        with pytest.raises((Cancelled, Unavailable)):
            list(events)
        assert sample(srv, "styleserve_requests_total", method="StyleTransfer", code="OK") == 0
        total = sum(
            sample(srv, "styleserve_requests_total", method="StyleTransfer", code=code)
            for code in ("CANCELLED", "UNAVAILABLE", "DEADLINE_EXCEEDED")
        )
        assert total == 1


def test_the_first_retry_hint_comes_from_the_measured_job_time(start_server, content, style):
    """Before any job finished, the hint is the start-up measurement of one evaluation scaled
    to a default job, not a fixed guess."""
    with (
        start_server(job_slots=1, queue_size=0) as srv,
        Client(srv.target) as client,
        Client(srv.target, retries=0) as no_retry,
    ):
        measured = client.info().precision_choice
        holder = _started(client, content, style)
        with pytest.raises(ResourceExhausted) as refused:
            no_retry.stylize(content, style, **QUICK)
        holder.close()
    # The client's PrecisionChoice carries the same trials the server's estimate reads.
    expected = expected_job_seconds(measured, PRESETS["default"])
    assert expected is not None
    assert refused.value.retry_after == max(1, math.ceil(expected))
