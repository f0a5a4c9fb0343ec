"""Two real replicas behind one address: a detachable job is followed where it runs (issue 22).

Behind a balancer, the client's own channel may reach any replica, and only one holds a given
job. Each replica here has a loopback TCP proxy in front (``TcpProxy``, the balancer's path to
it) and is told its own address (``advertise_address``, as the Kubernetes base tells a pod its
IP); the client dials one ``ipv4:`` target listing both proxies, so that round_robin spreads its
calls over the two as a headless Service's name would. A call broken mid-job must then find the
job through ``Started.replica``; a job whose replica is gone must end the caller's wait at once
(NOT_FOUND from the other replica, or UNAVAILABLE), never hang it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from harness import TcpProxy
from styleserve import Client, NotFound, Progress, Result, Started, Unavailable

from tests.fixtures_server import RunningServer, free_port, serve_in_thread

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

# Long enough that the job runs on well past the drop at its third Progress.
_ITERATIONS = 100
# Room for a busy machine: the call's deadline is the job's, and the server's deadline policy
# ends a job early with the Result it has (the checks count up to its iterations).
_TIMEOUT = 300
# The stop test's job: it must still be running when its replica stops, or the client could
# read the rest of a finished job from its receive window and never notice.
_ENDLESS = 5000
# How long "at once" may take: the reattach's first attempts (0, 0.5 and 1 s apart) on a
# shared machine, far below the 8 attempts (about 35 s) of a network that stays down.
_PROMPTLY_SECONDS = 15


class Replicas:
    """Two replicas, each behind its own proxy, and the one address that stands for both."""

    def __init__(self, servers: list[RunningServer], proxies: list[TcpProxy]) -> None:
        self.servers = servers
        self.proxies = proxies
        self.target = "ipv4:" + ",".join(proxy.target for proxy in proxies)

    def index(self, started: Started) -> int:
        """Which replica runs the job that ``started`` began (by the address it advertised)."""
        return [srv.settings.advertise_address for srv in self.servers].index(started.replica)


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    with contextlib.ExitStack() as stack:
        servers, proxies = [], []
        for _ in range(2):
            port = free_port()
            srv = stack.enter_context(
                serve_in_thread(port=port, advertise_address=f"127.0.0.1:{port}")
            )
            servers.append(srv)
            proxies.append(stack.enter_context(TcpProxy(srv.target)))
        yield Replicas(servers, proxies)


def _sample(srv: RunningServer, name: str, **labels: str) -> float:
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


def _calls(srv: RunningServer, method: str) -> float:
    """Calls of ``method`` that ``srv`` finished, whatever their status."""
    metrics = srv.server.metrics.registry.collect()
    return sum(
        sample.value
        for family in metrics
        if family.name == "styleserve_requests"
        for sample in family.samples
        if sample.name == "styleserve_requests_total" and sample.labels["method"] == method
    )


def test_a_dropped_call_is_followed_on_the_replica_that_runs_the_job(replicas, content, style):
    events: list[object] = []
    with Client(replicas.target, timeout=_TIMEOUT) as client:
        stream = client.stream(content, style, size=32, iterations=_ITERATIONS, detachable=True)
        for event in stream:
            events.append(event)
            if isinstance(event, Progress) and event.iteration == 3:
                # The balancer's path to the job's replica goes (a rollout moved it, an idle
                # timeout cut it): the call breaks, and the shared address now reaches only
                # the other replica, which does not hold the job.
                running = replicas.index(next(e for e in events if isinstance(e, Started)))
                replicas.proxies[running].close()
    result = events[-1]
    assert isinstance(result, Result) and [type(e) for e in events].count(Result) == 1
    progress = [e.iteration for e in events if isinstance(e, Progress)]
    assert progress == list(range(1, result.iterations + 1)) and result.iterations > 3
    job, other = replicas.servers[running], replicas.servers[1 - running]
    assert _sample(job, "styleserve_iterations_total") == result.iterations
    assert _sample(job, "styleserve_jobs_detached_total") == 1
    assert _sample(job, "styleserve_jobs_reattached_total") >= 1
    # The other replica ran nothing and was never asked for the job.
    assert _sample(other, "styleserve_iterations_total") == 0
    assert (_calls(other, "StyleTransfer"), _calls(other, "WatchJob")) == (0, 0)


def test_a_job_whose_replica_is_gone_ends_the_wait_at_once(replicas, content, style):
    with Client(replicas.target, timeout=_TIMEOUT) as client:
        stream = client.stream(content, style, size=32, iterations=_ENDLESS, detachable=True)
        started = next(e for e in stream if isinstance(e, Started))
        running = replicas.servers[replicas.index(started)]
        next(e for e in stream if isinstance(e, Progress))
        running.stop(0)
        stopped = time.monotonic()
        with pytest.raises((NotFound, Unavailable)):
            list(stream)
        assert time.monotonic() - stopped < _PROMPTLY_SECONDS
        # Another process of the caller, told the job's id and replica, learns it as promptly.
        asked = time.monotonic()
        with pytest.raises((NotFound, Unavailable)):
            list(client.watch_job(started.job_id, replica=started.replica))
        assert time.monotonic() - asked < _PROMPTLY_SECONDS
