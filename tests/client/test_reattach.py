"""The SDK reattaches to a detachable job by itself when its connection drops (issue 22).

Connections are broken for real, by a loopback TCP proxy between client and server
(``harness.TcpProxy``), never by cancelling a call or stopping the server. Against the stand-in
server of ``fake_jobs`` the drops land exactly where a test wants them (between Progress
events, between two chunks of the result); against the real server
they land wherever the job is when the client has read a given Progress.
"""

import asyncio
import contextlib

import pytest
from harness import TcpProxy
from styleserve import (
    AsyncClient,
    Client,
    NotFound,
    Progress,
    Result,
    Started,
    Unavailable,
)
from styleserve.errors import StyleserveError
from styleserve.resume import JobPosition, Resumption

from tests.client.client_helpers import png
from tests.client.fake_jobs import ITERATIONS, JOB_ID, RESULT_BYTES, FakeJobs

# Sequence numbers of the stand-in's job: Started 1, Progress 2-9, chunks 10-13, Result 14.
_PROGRESS_4 = 5
_THIRD_CHUNK = 12


@pytest.fixture
def fake():
    jobs = FakeJobs()
    yield jobs
    jobs.close()


def _job(client, **kwargs):
    return client.stream(png(), png(), size=32, iterations=ITERATIONS, **kwargs)


def _check_every_event_once(events, iterations):
    started = [e for e in events if isinstance(e, Started)]
    progress = [e.iteration for e in events if isinstance(e, Progress)]
    results = [e for e in events if isinstance(e, Result)]
    assert len(started) == 1 and started[0].job_id
    assert progress == list(range(1, iterations + 1))
    assert len(results) == 1 and events[-1] is results[0]
    return started[0], results[0]


def test_two_drops_one_between_progress_one_between_chunks_lose_and_repeat_nothing(fake):
    with TcpProxy(fake.target) as proxy, Client(proxy.target, timeout=30) as client:
        fake.drop_before = {_PROGRESS_4: proxy.drop, _THIRD_CHUNK: proxy.drop}
        events = list(_job(client, detachable=True))
    started, result = _check_every_event_once(events, ITERATIONS)
    assert started.job_id == JOB_ID
    assert result.data == RESULT_BYTES  # two chunks before the drop, two after, digest checked
    # A drop may take the events still in flight with it, Started too: the call is then sent
    # again and follows its job from its start, as a watch would.
    assert (proxy.drops, fake.jobs_run, fake.watches + fake.resends) == (2, 1, 2)


def test_the_asyncio_client_reattaches_alike(fake):
    async def run(target):
        async with AsyncClient(target, timeout=30) as client:
            return [event async for event in _job(client, detachable=True)]

    with TcpProxy(fake.target) as proxy:
        fake.drop_before = {_PROGRESS_4: proxy.drop, _THIRD_CHUNK: proxy.drop}
        events = asyncio.run(run(proxy.target))
    _, result = _check_every_event_once(events, ITERATIONS)
    assert result.data == RESULT_BYTES
    assert (fake.jobs_run, fake.watches + fake.resends) == (1, 2)


def test_reattach_goes_to_the_replica_that_runs_the_job():
    fake = FakeJobs(advertise=True)
    try:
        with TcpProxy(fake.target) as proxy, Client(proxy.target, timeout=30) as client:
            fake.drop_before = {_PROGRESS_4: proxy.drop}
            events = list(_job(client, detachable=True))
        started, _ = _check_every_event_once(events, ITERATIONS)
        assert started.replica == fake.target
        # The watch went to the replica's own address, not through the proxy (the balancer).
        assert (proxy.connections, fake.watches) == (1, 1)
    finally:
        fake.close()


def test_a_job_that_is_not_detachable_fails_as_before(fake):
    with TcpProxy(fake.target) as proxy, Client(proxy.target, timeout=30) as client:
        fake.drop_before = {_PROGRESS_4: proxy.drop}
        events = []
        with pytest.raises(Unavailable):
            events.extend(_job(client))
    # What was sent before the drop but not yet read dies with the connection (a reset).
    progress = [e.iteration for e in events if isinstance(e, Progress)]
    assert progress == list(range(1, len(progress) + 1)) and len(progress) <= 3
    assert fake.watches == 0


def test_a_job_the_server_no_longer_holds_is_not_found_at_once(fake):
    fake.forget = True
    with TcpProxy(fake.target) as proxy, Client(proxy.target, timeout=30) as client:
        fake.drop_before = {_PROGRESS_4: proxy.drop}
        with pytest.raises(NotFound, match=f"job {JOB_ID} was lost"):
            list(_job(client, detachable=True))
    assert fake.watches == 1


def test_watching_an_id_the_server_does_not_hold_is_its_own_not_found(server):
    # Not "lost": nothing broke; the server's message says what an unknown id may be.
    with Client(server.target, timeout=30) as client, pytest.raises(NotFound) as failure:
        list(client.watch_job("no-such-job"))
    assert failure.value.details.startswith("job_id: no such job for this caller")
    assert "was lost" not in failure.value.details


def test_leaving_the_loop_cancels_without_reattaching(fake):
    with Client(fake.target, timeout=30) as client:
        with contextlib.closing(_job(client, detachable=True)) as events:
            for event in events:
                if isinstance(event, Progress):
                    break
    assert fake.watches == 0


def test_another_client_watches_a_job_by_its_id(fake):
    with Client(fake.target, timeout=30) as owner:
        owner_events = list(_job(owner, detachable=True))
    with Client(fake.target, timeout=30) as watcher:
        everything = list(watcher.watch_job(JOB_ID))
        later = list(watcher.watch_job(JOB_ID, after_sequence=_PROGRESS_4))
        with pytest.raises(NotFound):
            list(watcher.watch_job("job-nobody-has"))
    _, result = _check_every_event_once(everything, ITERATIONS)
    assert result.data == owner_events[-1].data == RESULT_BYTES
    assert [e.iteration for e in later if isinstance(e, Progress)] == list(range(5, 9))
    assert isinstance(later[-1], Result) and later[-1].data == RESULT_BYTES


def test_the_attempts_back_off_alternate_replica_and_own_channel_and_end():
    position = JobPosition(JOB_ID, 3, "replica:1")
    resumption = Resumption(position, Unavailable("connection reset"), timeout=None)
    attempts = []
    with pytest.raises(Unavailable, match=f"watch_job\\('{JOB_ID}', after_sequence=3\\)"):
        for attempt in resumption.attempts(["replica", "own"]):
            attempts.append(attempt)
            assert attempt.request.after_sequence == 3
    assert [a.stub for a in attempts[:3]] == ["replica", "own", "replica"]
    delays = [a.delay for a in attempts]
    assert delays[:4] == [0.0, 0.5, 1.0, 2.0] and max(delays) == 10.0
    assert 2 <= len(attempts) <= 10


def test_an_event_getting_through_starts_the_count_again():
    position = JobPosition(JOB_ID, 3)
    attempts = Resumption(position, None, timeout=None).attempts(["own"])
    assert [next(attempts).delay for _ in range(3)] == [0.0, 0.5, 1.0]
    position.last_sequence = 4
    assert next(attempts).delay == 0.0


def test_a_deadline_is_kept_across_reattaches():
    position = JobPosition(JOB_ID, 3)
    attempts = Resumption(position, None, timeout=0.0).attempts(["own"])
    with pytest.raises(StyleserveError, match="deadline"):
        next(attempts)


# --- against the real server ---------------------------------------------------------------


_REAL_ITERATIONS = 40


def _sample(srv, name: str) -> float:
    return srv.server.metrics.registry.get_sample_value(name) or 0.0


def _iterations_run(srv) -> float:
    return _sample(srv, "styleserve_iterations_total")


def test_real_server_two_drops_every_progress_once_and_the_job_ran_once(
    start_server, content, style
):
    with start_server(job_slots=1) as srv, TcpProxy(srv.target) as proxy:
        with Client(proxy.target, timeout=120) as client:
            events = []
            for event in client.stream(
                content, style, size=32, iterations=_REAL_ITERATIONS, detachable=True
            ):
                events.append(event)
                if isinstance(event, Progress) and event.iteration in (3, 20):
                    proxy.drop()
        started, result = _check_every_event_once(events, started_total(events))
        assert proxy.drops == 2 and result.image().size[0] == 32
        # The job ran once, on through the drops, and the client watched it again.
        assert _iterations_run(srv) == started.total_iterations
        assert _sample(srv, "styleserve_jobs_detached_total") == 1
        assert _sample(srv, "styleserve_jobs_reattached_total") >= 1


def started_total(events):
    return next(e.total_iterations for e in events if isinstance(e, Started))


def test_real_server_a_second_client_watches_a_running_job_by_id(start_server, content, style):
    with start_server(job_slots=1) as srv:
        with Client(srv.target, timeout=120) as owner, Client(srv.target, timeout=120) as other:
            events = owner.stream(
                content, style, size=32, iterations=_REAL_ITERATIONS, detachable=True
            )
            started = next(e for e in events if isinstance(e, Started))
            watched = list(other.watch_job(started.job_id))
            owned = list(events)
        assert isinstance(watched[-1], Result) and isinstance(owned[-1], Result)
        assert watched[-1].data == owned[-1].data
        assert _iterations_run(srv) == started.total_iterations
        # Every event carries its number, and a watch resumes after any of them.
        mine = [started, *owned]
        numbers = [e.sequence for e in mine]
        assert numbers[0] >= 1 and numbers == sorted(set(numbers)), numbers
        middle = next(e for e in mine if isinstance(e, Progress) and e.iteration == 2)
        with Client(srv.target, timeout=120) as later:
            resumed = list(later.watch_job(started.job_id, after_sequence=middle.sequence))
        assert [e.sequence for e in resumed] == [n for n in numbers if n > middle.sequence]
        assert resumed[-1].sequence == owned[-1].sequence


def test_real_server_a_job_that_is_not_detachable_fails_on_a_drop(start_server, content, style):
    with start_server(job_slots=1) as srv, TcpProxy(srv.target) as proxy:
        with Client(proxy.target, timeout=120) as client:
            with pytest.raises(Unavailable):
                for event in client.stream(content, style, size=32, iterations=_REAL_ITERATIONS):
                    if isinstance(event, Progress) and event.iteration == 3:
                        proxy.drop()
        assert _iterations_run(srv) < _REAL_ITERATIONS
