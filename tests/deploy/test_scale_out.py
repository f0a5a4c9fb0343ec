"""Scale-out as Kubernetes runs it, simulated on loopback: several real servers behind one
client channel with the ``round_robin`` policy (what the headless Service and a
``dns:///`` target give in a cluster; here the addresses are listed in an ``ipv4:`` target).

Each server counts the calls it served in its own metrics registry, which is how the tests
tell where each job ran.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from PIL import Image
from styleserve import Client
from styleserve.errors import StyleserveError
from styleserve.events import Progress, Result

from tests.fixtures_server import RunningServer, wait_draining

SERVERS = 3
JOB = {"size": 32, "iterations": 2, "scales": [1.0]}


def _picture(shade: int) -> Image.Image:
    return (
        Image.linear_gradient("L")
        .resize((48, 32))
        .point(lambda v: (v + shade) % 256)
        .convert("RGB")
    )


CONTENT, STYLE = _picture(0), _picture(97)


def _size(result: Result) -> tuple[int, int]:
    return result.width, result.height


def _served(server: RunningServer) -> int:
    """StyleTransfer calls this server finished with OK."""
    value = server.server.metrics.registry.get_sample_value(
        "styleserve_requests_total", {"method": "StyleTransfer", "code": "OK"}
    )
    return int(value or 0)


def _served_by(servers: list[RunningServer], total: int) -> list[int]:
    """Calls served by each server once ``total`` are counted: a server counts a call just
    after its last message is sent, so the client may see the result a moment earlier."""
    for _ in range(200):
        counts = [_served(s) for s in servers]
        if sum(counts) >= total:
            return counts
        time.sleep(0.05)
    return counts


def _running(server: RunningServer) -> int:
    return int(server.server.metrics.registry.get_sample_value("styleserve_running_jobs") or 0)


@pytest.fixture
def servers(
    start_server: Callable[..., contextlib.AbstractContextManager[RunningServer]],
) -> Iterator[list[RunningServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start_server(job_slots=1, queue_size=4)) for _ in range(SERVERS)]


@pytest.fixture
def client(servers: list[RunningServer]) -> Iterator[Client]:
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    with Client(target, load_balancing="round_robin", timeout=120) as balanced:
        yield balanced


def test_round_robin_spreads_jobs_over_every_server(servers: list[RunningServer], client: Client):
    jobs = 3 * SERVERS
    for _ in range(jobs):
        assert _size(client.stylize(CONTENT, [STYLE], **JOB)) == (32, 21)
    served = _served_by(servers, jobs)
    assert sum(served) == jobs
    assert all(n >= 1 for n in served), f"jobs per server: {served}"


def test_a_server_going_away_fails_its_stream_and_the_others_serve(
    servers: list[RunningServer], client: Client
):
    # Long enough to be running when its server goes.
    events = client.stream(CONTENT, [STYLE], size=32, iterations=4000, scales=[1.0])
    first = next(e for e in events if isinstance(e, Progress))
    assert first.iteration >= 1
    (victim,) = [s for s in servers if _running(s) == 1]
    survivors = [s for s in servers if s is not victim]

    victim.stop(grace=0)  # a pod killed mid-job: no time to finish

    with pytest.raises(StyleserveError) as failure:
        for event in events:
            assert not isinstance(event, Result), "the job cannot finish on a stopped server"
    assert failure.value.code == grpc.StatusCode.UNAVAILABLE, failure.value

    # The channel drops the stopped server; new calls land on the others and succeed.
    for _ in range(len(survivors)):
        assert _size(client.stylize(CONTENT, [STYLE], **JOB)) == (32, 21)
    assert sum(_served_by(survivors, len(survivors))) == len(survivors)
    assert _served(victim) == 0


def test_a_draining_server_finishes_its_job_while_new_calls_go_elsewhere(
    servers: list[RunningServer], client: Client
):
    # What a rolling update or a scale-down does to a pod: SIGTERM with a job in flight.
    events = client.stream(CONTENT, [STYLE], size=32, iterations=300, scales=[1.0])
    next(e for e in events if isinstance(e, Progress))
    (victim,) = [s for s in servers if _running(s) == 1]
    draining = threading.Thread(target=victim.stop, kwargs={"grace": 120})
    draining.start()
    try:
        wait_draining(victim.target)
        for _ in range(2 * SERVERS):
            assert _size(client.stylize(CONTENT, [STYLE], **JOB)) == (32, 21)
        assert _running(victim) == 1, "the drained job ended too early for this test to count"
        assert isinstance(list(events)[-1], Result)
    finally:
        draining.join()
