"""Whether the server holds up under load: nothing lost, no memory or thread growth, dead
clients' slots freed, health answered.

Starts a real ``styleserve-server`` process on the tiny network (``--backbone tiny-vgg16
--feed-forward tiny-arbitrary``, ``--job-slots`` ``--slots``, a queue for every stream, the
metrics port on) and measures it with the real client (``styleserve.AsyncClient``: one event
loop follows every stream, as a backend would) and psutil on the server's pid:

1. soak: ``--streams`` concurrent streams for ``--seconds``, each starting a new job when its
   last one ends. Every job streams 80 Progress records (the server keeps every one for a slow
   reader); each stream's iteration numbers must arrive complete and in order (lost:
   missing numbers; out of order: a number not above the one before). Streams still open at
   the end are cancelled (no failure; their records up to then still count). Also: terminal
   statuses, time from the call to the first Progress (queue wait included: only ``--slots``
   jobs run at once), grpc.health.v1 checks on a channel of their own meanwhile, and the
   server's RSS before (after one warm-up round) and after;
2. cancels: ``--cancels`` streams, ``--slots`` at a time, each cancelled after its first event
   (while queued or just starting) or, every other one, after its first Progress (running);
   the RSS growth, the running and queued gauges (read from the metrics port) back at 0, and
   no call the server counted INTERNAL (a cancel that races a write is the caller's CANCELLED);
3. dead clients: one ``styleserve stylize`` CLI process per slot holds every slot, as many jobs
   wait in the queue, the CLIs are SIGKILLed: the time until the last waiting job starts;
4. sequential jobs: ``--jobs`` small jobs one after another: the slope of the RSS per job (a
   least-squares line through the second half, after the first half's warm-up), and the
   server's threads and open file descriptors before and after;
5. hostile neighbours, on a server of its own with a token: a legitimate job's time and the
   health check's p99 alone, then with each job started together with the four costly requests
   of the hardening issue (7 million scales, 2 million layer names, 16 MB of bytes no decoder
   knows, a registration worked at 4096x4096: the cost model refuses each as it arrives) and
   20 streams without the token that carry 15 MB each, every hostile caller a process of its
   own;
6. dropped connections, on a server of its own that keeps a finished detachable job
   ``RETENTION_SECONDS`` and an unwatched one ``GRACE_SECONDS``: ``--reattach-jobs`` detachable
   jobs at once, each caller behind a TCP proxy of its own (``harness.TcpProxy``) that
   resets its connection at moments drawn per caller (``Drops``: while queued, mid-job, or
   twice), the SDK reattaching by itself: events lost (Progress numbers missing, jobs without
   a Result) and seen twice, the jobs the server ran beyond one per caller, and the server's
   RSS once the store has forgotten every job, against before.

    python benchmarks/load.py [--streams 100] [--seconds 60] [--cancels 2000] [--jobs 2000]
                              [--hostile-rounds 20] [--hostile-costly 4] [--hostile-streams 20]
                              [--reattach-jobs 50] [--hostile-only | --reattach-only]

Prints the hardware, then one line per figure with its threshold and PASS or FAIL (or "-"
for a figure that has none); exits 1 when any fails. ``tests/reliability/test_reliability.py``
runs parts 1-4 at CI size, ``tests/reliability/test_reattach_load.py`` part 6.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import io
import itertools
import math
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import harness
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import CONTENT, STYLE, Server, TcpProxy, machine, time_health_checks
from PIL import Image
from styleserve import AsyncClient, Event, Progress, Queued, Result, Started, StyleserveError
from styleserve_export.artifact import TINY_BACKBONE, TINY_FEED_FORWARD

__all__ = [
    "Drops",
    "Figure",
    "StreamLog",
    "cancels",
    "dead_clients",
    "hardware",
    "hostile_neighbours",
    "reattach",
    "sequential",
    "serve",
    "soak",
]

# Tiny-network jobs: one Adam evaluation per iteration keeps the Progress records coming
# steadily; the server keeps every one for a slow reader (jobs.py), so a reader that fell
# behind must still see them all.
STREAMED: dict[str, Any] = {
    "size": 32,
    "iterations": 80,
    "optimizer": "adam",
    "scales": [1.0],
    "precision": "float32",
}
# Runs until cancelled (the server's most iterations).
ENDLESS = {**STREAMED, "iterations": 5000}
# The sequential part's job: as little work as a job can be, so that per-job overhead shows.
SMALL: dict[str, Any] = {**STREAMED, "iterations": 3}
OK = "OK"
OPEN_AT_THE_END = "open at the end"
MB = 2**20


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure; it passes when it is below ``below`` and at most ``at_most``
    (either absent: no threshold)."""

    name: str
    value: float
    unit: str = ""
    digits: int = 0
    below: float | None = None
    at_most: float | None = None

    @property
    def passed(self) -> bool:
        return (self.below is None or self.value < self.below) and (
            self.at_most is None or self.value <= self.at_most
        )

    @property
    def threshold(self) -> str:
        if self.below is not None:
            return f"< {self.below:g}"
        if self.at_most is not None:
            return f"<= {self.at_most:g}"
        return ""

    def line(self, hardware: str) -> str:
        value = f"{self.value:.{self.digits}f} {self.unit}".strip()
        if not self.threshold:
            return f"{self.name}: {value} [{hardware}]"
        verdict = "PASS" if self.passed else "FAIL"
        return f"{self.name}: {value} (threshold {self.threshold}: {verdict}) [{hardware}]"


@functools.cache
def hardware() -> str:
    """The short name of this machine that every figure carries: its CPU model and cores
    (``machine()``, printed first, has the flags and the torch build)."""
    model = machine().removeprefix("cpu ").partition(" (")[0]
    return f"{model}, {os.cpu_count()} cores"


def serve(slots: int, queue_size: int, **settings: Any) -> AbstractContextManager[Server]:
    """A server process on the tiny network with ``slots`` job slots, ``queue_size`` places in
    the queue, its metrics port on (and ``settings``), once it says SERVING; stopped on exit."""
    return harness.serve(
        metrics=True,
        timeout=300,
        backbone=TINY_BACKBONE,
        feed_forward=TINY_FEED_FORWARD,
        job_slots=slots,
        queue_size=queue_size,
        **settings,
    )


def _gauges(server: Server) -> tuple[float, float]:
    """(running, queued) jobs, as the metrics port says."""
    values = {sample.name: sample.value for sample in server.samples()}
    return values["styleserve_running_jobs"], values["styleserve_queue_depth"]


def _idle(server: Server) -> bool:
    return _gauges(server) == (0, 0)


@functools.cache
def _pictures() -> tuple[bytes, bytes]:
    """The examples' content and style at 64 px: decoding the full pictures would be most of
    a tiny job's work."""

    def small(path: Path) -> bytes:
        image = Image.open(path).convert("RGB")
        image.thumbnail((64, 64))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    return small(CONTENT), small(STYLE)


@dataclasses.dataclass
class StreamLog:
    """What one stream delivered, and when (``time.perf_counter`` seconds)."""

    began: float
    started: float | None = None
    first_progress: float | None = None
    total: int | None = None
    iterations: list[int] = dataclasses.field(default_factory=list)
    outcome: str = OPEN_AT_THE_END

    def record(self, event: Event) -> None:
        now = time.perf_counter()
        if isinstance(event, Started):
            self.started, self.total = now, event.total_iterations
        elif isinstance(event, Progress):
            if self.first_progress is None:
                self.first_progress = now - self.began
            self.iterations.append(event.iteration)
        elif isinstance(event, Result):
            self.outcome = OK

    def lost(self) -> int:
        """Iteration numbers that never came: of all the job's when it ended with a Result,
        else of those up to the last one seen."""
        seen = set(self.iterations)
        last = self.total if self.outcome == OK and self.total else max(seen, default=0)
        return len(set(range(1, last + 1)) - seen)

    def out_of_order(self) -> int:
        return sum(b <= a for a, b in itertools.pairwise(self.iterations))


async def _follow(
    client: AsyncClient,
    log: StreamLog,
    options: dict[str, Any],
    each: Callable[[Event], None] | None = None,
) -> None:
    """Runs one job, logging its events (and passing each to ``each``, after the log has
    it); a failure is logged as its status, not raised."""
    content, style = _pictures()
    try:
        async with contextlib.aclosing(client.stream(content, style, **options)) as events:
            async for event in events:
                log.record(event)
                if each is not None:
                    each(event)
        if log.outcome != OK:
            log.outcome = "ended without a Result"
    except StyleserveError as error:
        log.outcome = error.code.name


async def _until(condition: Callable[[], bool], timeout: float) -> float:
    """Polls ``condition`` (off the event loop: it may read the metrics port) until it holds;
    returns the seconds that took, or infinity after ``timeout``."""
    began = time.perf_counter()
    while not await asyncio.to_thread(condition):
        if time.perf_counter() - began > timeout:
            return math.inf
        await asyncio.sleep(0.01)
    return time.perf_counter() - began


def _p(values: list[float], percent: int) -> float:
    """The ``percent``-th percentile (nan with fewer than two values)."""
    if len(values) < 2:
        return math.nan
    return statistics.quantiles(values, n=100)[percent - 1]


def _client(target: str) -> AsyncClient:
    # No retries: a refusal is a figure here, not something to hide.
    return AsyncClient(target, timeout=3600, retries=0)


async def _stream_for(
    client: AsyncClient, seconds: float, streams: int, logs: list[StreamLog]
) -> None:
    """``streams`` streams that each start a job after another for ``seconds``; those still
    open then are cancelled."""

    async def one_after_another() -> None:
        while time.perf_counter() < end:
            log = StreamLog(time.perf_counter())
            logs.append(log)
            await _follow(client, log, STREAMED)

    end = time.perf_counter() + seconds
    tasks = [asyncio.create_task(one_after_another()) for _ in range(streams)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):  # a fault of this benchmark: not to be hidden
            raise outcome


def soak(
    server: Server,
    streams: int,
    seconds: float,
    *,
    rss_growth_mb: float = 50,
    health_p99_ms: float = 50,
) -> list[Figure]:
    """Part 1: ``streams`` concurrent streams for ``seconds``."""

    async def run() -> list[StreamLog]:
        async with _client(server.target) as client:
            # One job per slot first: the server's worker threads and allocator arenas exist
            # before the RSS is read, so that growth means growth.
            warm = [StreamLog(time.perf_counter()) for _ in range(server.job_slots)]
            await asyncio.gather(*(_follow(client, log, STREAMED) for log in warm))
            before.append(server.rss())
            checker.start()
            logs: list[StreamLog] = []
            await _stream_for(client, seconds, streams, logs)
            return logs

    before: list[int] = []
    stop, health = threading.Event(), list[float]()
    checker = threading.Thread(target=time_health_checks, args=(server.target, stop, health))
    try:
        logs = asyncio.run(run())
    finally:
        stop.set()
        if checker.is_alive():
            checker.join()
    after = server.rss()
    firsts = [log.first_progress for log in logs if log.first_progress is not None]
    queued = [log.started - log.began for log in logs if log.started is not None]
    name = f"soak, {streams} streams for {seconds:g} s ({server.job_slots} slots):"
    return [
        Figure(f"{name} jobs ended with a Result", sum(log.outcome == OK for log in logs)),
        Figure(
            f"{name} streams ended otherwise",
            sum(log.outcome not in (OK, OPEN_AT_THE_END) for log in logs),
            at_most=0,
        ),
        Figure(f"{name} Progress records", sum(len(log.iterations) for log in logs)),
        Figure(f"{name} Progress records lost", sum(log.lost() for log in logs), at_most=0),
        Figure(
            f"{name} Progress records out of order",
            sum(log.out_of_order() for log in logs),
            at_most=0,
        ),
        Figure(f"{name} call to first Progress p50", statistics.median(firsts), "s", 2),
        Figure(f"{name} call to first Progress p99", _p(firsts, 99), "s", 2),
        Figure(f"{name} call to Started (queue wait) p50", statistics.median(queued), "s", 2),
        Figure(f"{name} health checks", len(health)),
        Figure(f"{name} health check p99", _p(health, 99) * 1000, "ms", 1, below=health_p99_ms),
        Figure(f"{name} server RSS before", before[0] / MB, "MB", 1),
        Figure(f"{name} server RSS after", after / MB, "MB", 1),
        Figure(f"{name} server RSS growth", (after - before[0]) / MB, "MB", 1, below=rss_growth_mb),
    ]


async def _cancel_once(client: AsyncClient, at_progress: bool) -> None:
    content, style = _pictures()
    async with contextlib.aclosing(client.stream(content, style, **ENDLESS)) as events:
        async for event in events:
            if not at_progress or isinstance(event, Progress):
                break


def cancels(server: Server, count: int, *, rss_growth_mb: float = 20) -> list[Figure]:
    """Part 2: ``count`` cancelled streams, a slot's worth at a time."""

    async def run() -> float:
        async with _client(server.target) as client:
            jobs = iter(range(count + warmup))

            async def canceller() -> None:
                for index in jobs:
                    if index == warmup:
                        before.append(server.rss())
                    await _cancel_once(client, at_progress=index % 2 == 1)

            await asyncio.gather(*(canceller() for _ in range(server.job_slots)))
        return await _until(functools.partial(_idle, server), timeout=60)

    # A few cancels before the RSS is read, for the same reason as the soak's warm-up round.
    warmup = 4 * server.job_slots
    before: list[int] = []
    settle = asyncio.run(run())
    growth = (server.rss() - before[0]) / MB
    running, queued = _gauges(server)
    # A cancel that races the server's next write must still count as the caller's doing.
    internal = sum(
        sample.value
        for sample in server.samples()
        if sample.name == "styleserve_requests_total" and sample.labels["code"] == "INTERNAL"
    )
    name = f"cancels, {count} streams ({server.job_slots} at a time):"
    return [
        Figure(f"{name} server RSS growth", growth, "MB", 1, below=rss_growth_mb),
        Figure(f"{name} running + queued jobs after", running + queued, at_most=0),
        Figure(f"{name} time for the gauges to reach 0", settle, "s", 2),
        Figure(f"{name} calls the server ended INTERNAL (since it started)", internal, at_most=0),
    ]


def dead_clients(server: Server, *, free_seconds: float = 5) -> list[Figure]:
    """Part 3: a CLI process holds each slot, as many jobs wait, the CLIs are SIGKILLed."""

    async def run(children: list[subprocess.Popen[bytes]]) -> list[float]:
        if await _until(lambda: _gauges(server)[0] == server.job_slots, timeout=120) == math.inf:
            raise RuntimeError("the CLI processes never held every slot")
        async with _client(server.target) as client:
            waiting = [StreamLog(time.perf_counter()) for _ in range(server.job_slots)]
            tasks = [asyncio.create_task(_follow(client, log, SMALL)) for log in waiting]
            if await _until(lambda: _gauges(server)[1] == server.job_slots, timeout=60) == math.inf:
                raise RuntimeError("the waiting jobs never queued")
            killed = time.perf_counter()
            for child in children:
                child.send_signal(signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return [math.inf if log.started is None else log.started - killed for log in waiting]

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "styleserve.cli", "stylize", str(CONTENT), str(STYLE)]
        command += ["-o", str(Path(folder) / "never.png"), "--server", server.target]
        command += ["--size", "32", "--iterations", str(ENDLESS["iterations"]), "--quiet"]
        children = [subprocess.Popen(command) for _ in range(server.job_slots)]
        try:
            waits = asyncio.run(run(children))
        finally:
            for child in children:
                child.kill()
                child.wait()
    name = f"dead clients, {server.job_slots} SIGKILLed CLIs holding every slot:"
    return [
        Figure(
            f"{name} time until the last waiting job started",
            max(waits),
            "s",
            2,
            below=free_seconds,
        )
    ]


# Thread pools (asyncio's default executor, gRPC's) start their threads lazily, up to their
# size, the first time calls overlap: a thread or two may appear after any warm-up. A thread
# leaked per job would show as hundreds.
_LAZY_THREADS = 2


def sequential(server: Server, jobs: int, *, growth_per_job: float = 1024) -> list[Figure]:
    """Part 4: ``jobs`` small jobs one after another; ``growth_per_job`` bounds the RSS
    slope in bytes."""

    async def run() -> list[int]:
        content, style = _pictures()
        rss = []
        async with _client(server.target) as client:
            # The part's own warm-up: whatever a first job allocates once is not growth.
            for _ in range(10):
                await client.stylize(content, style, **SMALL)
            await _until(functools.partial(_idle, server), timeout=60)
            counts.append((server.threads(), server.fds()))
            for _ in range(jobs):
                await client.stylize(content, style, **SMALL)
                rss.append(server.rss())
            # Counted with the client's connection still open, as before.
            await _until(functools.partial(_idle, server), timeout=60)
            counts.append((server.threads(), server.fds()))
        return rss

    counts: list[tuple[int, int]] = []
    rss = asyncio.run(run())
    half = jobs // 2
    slope = statistics.linear_regression(range(half, jobs), rss[half:]).slope
    (threads_before, fds_before), (threads_after, fds_after) = counts
    name = f"sequential, {jobs} jobs:"
    return [
        Figure(
            f"{name} RSS slope over the second half",
            slope,
            "B/job",
            below=growth_per_job,
        ),
        Figure(f"{name} RSS growth over all", (rss[-1] - rss[0]) / MB, "MB", 1),
        Figure(f"{name} threads before", threads_before),
        Figure(
            f"{name} threads after - before",
            threads_after - threads_before,
            at_most=_LAZY_THREADS,
        ),
        Figure(f"{name} open fds before", fds_before),
        Figure(f"{name} open fds after - before", fds_after - fds_before, at_most=0),
    ]


TOKEN = "neighbourly"
# A legitimate job of about a second on the tiny network, alone.
LEGITIMATE: dict[str, Any] = {**STREAMED, "size": 128, "iterations": 250}


# The four costly requests, in the order _hostile_request builds them: before the cost
# model, each cost the server seconds of CPU or gigabytes before it was refused.
HOSTILE_REQUESTS = (
    "a job with 7 million scales",
    "a job with 2 million layer names",
    "a job with 16 MB that no decoder knows",
    "a registration worked at 4096x4096",
)
_STYLE_TRANSFER = "/styleserve.v1.StyleTransferService/StyleTransfer"
_REGISTER_STYLE = "/styleserve.v1.StyleTransferService/RegisterStyle"


def _hostile_request(index: int) -> tuple[str, bytes]:
    """(method, serialised request) of HOSTILE_REQUESTS[index]."""
    from styleserve.v1 import style_transfer_pb2 as pb

    content, style = _pictures()
    styles = [pb.StylePicture(image=pb.Image(data=style))]
    if index == 3:
        options = pb.StyleOptions(size=2048, style_scale=2.0)
        return _REGISTER_STYLE, pb.RegisterStyleRequest(
            styles=styles, options=options
        ).SerializeToString()
    job = pb.StyleTransferRequest(content=pb.Image(data=content), styles=styles)
    if index == 0:
        job.options.scales.extend([0.5] * 7_000_000)
    elif index == 1:
        job.options.style_layers.extend(["block1_conv1"] * 2_000_000)
    else:
        job.content.data = b"\xc5\xd0\xd3\xc6" + os.urandom(15_900_000)
    return _STYLE_TRANSFER, job.SerializeToString()


def _neighbour(target: str, request: int | None, go: Any, codes: Any) -> None:
    """One hostile caller, in a process of its own (the measuring process shares no interpreter
    with it): each time ``go`` yields, sends the costly request number ``request`` (with the
    token), or with None a health Watch without the token whose service name is 15 MB, and
    puts the status it got on ``codes``; stops at None."""
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        metadata: tuple[tuple[str, str], ...] = ()
        if request is None:
            # Any: the type stubs of grpcio-health-checking declare HealthStub without methods.
            stub: Any = health_pb2_grpc.HealthStub(channel)
            call: Any = stub.Watch
            message: Any = health_pb2.HealthCheckRequest(service="s" * 15_000_000)
        else:
            method, message = _hostile_request(request)
            call = channel.unary_stream(method, request_serializer=None)
            metadata = (("authorization", f"Bearer {TOKEN}"),)
        while go.get() is not None:
            try:
                for _ in call(message, metadata=metadata, timeout=60):
                    pass
                codes.put("OK")
            except grpc.RpcError as error:
                codes.put(error.code().name)


def _legitimate(
    server: Server, jobs: int, before_each: Callable[[], None] = lambda: None
) -> tuple[list[float], list[float]]:
    """(the times of ``jobs`` legitimate jobs run one after another, ``before_each`` called as
    each starts; health check times meanwhile)."""
    content, style = _pictures()
    stop, health = threading.Event(), list[float]()
    checker = threading.Thread(target=time_health_checks, args=(server.target, stop, health))

    async def run() -> list[float]:
        times = []
        async with AsyncClient(server.target, timeout=600, retries=0, token=TOKEN) as client:
            for _ in range(jobs):
                before_each()
                began = time.perf_counter()
                await client.stylize(content, style, **LEGITIMATE)
                times.append(time.perf_counter() - began)
        return times

    checker.start()
    try:
        times = asyncio.run(run())
    finally:
        stop.set()
        checker.join()
    return times, health


def hostile_neighbours(
    slots: int,
    rounds: int,
    *,
    costly: int = len(HOSTILE_REQUESTS),
    without_token: int = 20,
    slowdown: float = 1.5,
    health_p99_ms: float = 50,
) -> list[Figure]:
    """Part 5, on a server of its own with a token: ``rounds`` legitimate jobs alone, then
    ``rounds`` more, each started together with the first ``costly`` of HOSTILE_REQUESTS and
    ``without_token`` streams without the token."""
    spawn = multiprocessing.get_context("spawn")
    codes: Any = spawn.Queue()
    requests: list[int | None] = [*range(costly), *[None] * without_token]
    gates = [spawn.Queue() for _ in requests]
    answered: list[str] = []

    released = 0

    def collect() -> None:
        answered.extend(codes.get(timeout=120) for _ in gates)

    def release() -> None:
        nonlocal released
        if released:  # every round starts with none of the last one's calls in flight
            collect()
        released += 1
        for gate in gates:
            gate.put(True)

    with serve(slots, slots, auth_token=TOKEN) as server:
        neighbours = [
            spawn.Process(target=_neighbour, args=(server.target, r, gate, codes))
            for r, gate in zip(requests, gates, strict=True)
        ]
        for process in neighbours:
            process.start()
        try:
            _legitimate(server, 3)  # warm-up
            idle, idle_health = _legitimate(server, rounds)
            rss_before = server.rss()
            busy, busy_health = _legitimate(server, rounds, release)
            collect()
            rss_after = server.rss()
        finally:
            for gate in gates:
                gate.put(None)
            for process in neighbours:
                process.join(timeout=30)
                process.kill()
    name = "hostile neighbours:"
    ratio = statistics.median(busy) / statistics.median(idle)
    refused = {code: answered.count(code) for code in sorted(set(answered))}
    return [
        Figure(
            f"{name} a legitimate job alone, median of {len(idle)}", statistics.median(idle), "s", 3
        ),
        Figure(
            f"{name} the same job started with {costly} costly requests and {without_token} "
            f"streams without the token, median of {len(busy)}",
            statistics.median(busy),
            "s",
            3,
        ),
        Figure(f"{name} beside them / alone", ratio, "x", 2, below=slowdown),
        Figure(f"{name} health check p99 alone", _p(idle_health, 99) * 1000, "ms", 1),
        Figure(
            f"{name} health check p99 beside them",
            _p(busy_health, 99) * 1000,
            "ms",
            1,
            below=health_p99_ms,
        ),
        Figure(f"{name} hostile calls answered {refused}", len(answered)),
        Figure(
            f"{name} hostile calls answered OK or INTERNAL",
            answered.count("OK") + answered.count("INTERNAL"),
            at_most=0,
        ),
        Figure(f"{name} server RSS after them - before", (rss_after - rss_before) / MB, "MB", 1),
    ]


# The reattach part's jobs, whose 80 Progress records its drops land between.
REATTACHED: dict[str, Any] = {**STREAMED, "detachable": True}
# Its server forgets a finished job, and cancels one nobody watches, this soon: its RSS is
# read again once every job of the part is gone.
RETENTION_SECONDS = 5
GRACE_SECONDS = 10


@dataclasses.dataclass
class Drops:
    """When one caller's connection is reset (``proxy.drop``, every connection it has open):
    at the first Queued event it reads (``queued``), and as each Progress numbered in ``at``
    arrives; counts the drops that reset a connection."""

    proxy: TcpProxy
    queued: bool
    at: frozenset[int]
    while_queued: int = 0
    mid_job: int = 0

    @classmethod
    def drawn(cls, proxy: TcpProxy, index: int, rng: random.Random) -> Drops:
        """Caller ``index``'s drops, in turn: while queued; once mid-job; twice mid-job; while
        queued and again mid-job (the Progress drawn from ``rng``). A first Queued may come
        just before the job's Started: that drop lands as the job starts."""
        kind = index % 4
        at = rng.sample(range(1, REATTACHED["iterations"]), (0, 1, 2, 1)[kind])
        return cls(proxy, queued=kind in (0, 3), at=frozenset(at))

    def __call__(self, event: Event) -> None:
        if isinstance(event, Queued) and self.queued:
            self.queued = False
            self.while_queued += self.proxy.drop() > 0
        elif isinstance(event, Progress) and event.iteration in self.at:
            self.mid_job += self.proxy.drop() > 0


def _total(server: Server, name: str) -> float:
    """The sum of ``name``'s samples over their labels, as the metrics port says now."""
    return sum(sample.value for sample in server.samples() if sample.name == name)


def _dropped(server: Server, count: int, rng: random.Random) -> tuple[list[StreamLog], list[Drops]]:
    """``count`` detachable jobs at once, each caller with a proxy and a client of its own
    whose connection ``Drops.drawn`` resets."""

    async def run() -> None:
        async def caller(log: StreamLog, drops: Drops) -> None:
            async with _client(drops.proxy.target) as client:
                await _follow(client, log, REATTACHED, drops)

        await asyncio.gather(*(caller(log, drops) for log, drops in zip(logs, plans, strict=True)))

    with contextlib.ExitStack() as proxies:
        plans = [
            Drops.drawn(proxies.enter_context(TcpProxy(server.target)), index, rng)
            for index in range(count)
        ]
        logs = [StreamLog(time.perf_counter()) for _ in plans]
        asyncio.run(run())
    return logs, plans


def _forgotten(server: Server) -> float:
    """Seconds until the server runs no job and its store holds none (infinity after the
    retention and grace and a minute)."""

    def empty() -> bool:
        return _idle(server) and _total(server, "styleserve_job_store_entries") == 0

    return asyncio.run(_until(empty, timeout=RETENTION_SECONDS + GRACE_SECONDS + 60))


def reattach(slots: int, jobs: int, *, rss_growth_mb: float = 20, seed: int = 22) -> list[Figure]:
    """Part 6, on a server of its own with a short retention and detach grace: ``jobs``
    detachable jobs at once through proxies that drop their connections (``Drops``)."""
    rng = random.Random(seed)
    kept = {"job_retention_seconds": RETENTION_SECONDS, "detach_grace_seconds": GRACE_SECONDS}
    with serve(slots, jobs, **kept) as server:
        # A round of every kind of drop first, forgotten again, for the same reason as the
        # soak's warm-up round.
        _dropped(server, 4 * slots, rng)
        if _forgotten(server) == math.inf:
            raise RuntimeError("the warm-up's jobs were never forgotten")
        rss_before = server.rss()
        ran_before = _total(server, "styleserve_job_duration_seconds_count")
        began = time.perf_counter()
        logs, plans = _dropped(server, jobs, rng)
        seconds = time.perf_counter() - began
        ran = _total(server, "styleserve_job_duration_seconds_count") - ran_before
        forgotten = _forgotten(server)
        rss_after = server.rss()
    without = [log.outcome for log in logs if log.outcome != OK]
    outcomes = {outcome: without.count(outcome) for outcome in sorted(set(without))}
    seen_twice = sum(len(log.iterations) - len(set(log.iterations)) for log in logs)
    name = f"reattach, {jobs} detachable jobs through dropping proxies ({slots} slots):"
    return [
        Figure(f"{name} time for every job", seconds, "s", 1),
        Figure(f"{name} drops while queued", sum(plan.while_queued for plan in plans)),
        Figure(f"{name} drops mid-job", sum(plan.mid_job for plan in plans)),
        Figure(
            f"{name} callers dropped more than once",
            sum(plan.while_queued + plan.mid_job > 1 for plan in plans),
        ),
        Figure(f"{name} jobs ended without a Result {outcomes}", len(without), at_most=0),
        Figure(f"{name} Progress records lost", sum(log.lost() for log in logs), at_most=0),
        Figure(f"{name} Progress records seen twice", seen_twice, at_most=0),
        Figure(
            f"{name} Progress records out of order",
            sum(log.out_of_order() for log in logs),
            at_most=0,
        ),
        Figure(f"{name} jobs the server ran beyond one per caller", ran - jobs, at_most=0),
        Figure(f"{name} time until the store held no job", forgotten, "s", 1),
        Figure(f"{name} server RSS before", rss_before / MB, "MB", 1),
        Figure(
            f"{name} server RSS once every job was forgotten - before",
            (rss_after - rss_before) / MB,
            "MB",
            1,
            below=rss_growth_mb,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent soak streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak")
    parser.add_argument("--cancels", type=int, default=2000, help="cancelled streams")
    parser.add_argument("--jobs", type=int, default=2000, help="sequential jobs")
    parser.add_argument("--slots", type=int, default=4, help="the server's --job-slots")
    parser.add_argument(
        "--hostile-rounds", type=int, default=20, help="legitimate jobs, alone and beside"
    )
    parser.add_argument(
        "--hostile-costly",
        type=int,
        default=len(HOSTILE_REQUESTS),
        choices=range(len(HOSTILE_REQUESTS) + 1),
        help="how many of the costly requests start with each job (the first N)",
    )
    parser.add_argument(
        "--hostile-streams", type=int, default=20, help="streams without the token per job"
    )
    parser.add_argument(
        "--reattach-jobs", type=int, default=50, help="detachable jobs whose connections drop"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--hostile-only", action="store_true", help="run the hostile-neighbours part alone"
    )
    only.add_argument("--reattach-only", action="store_true", help="run the reattach part alone")
    args = parser.parse_args(argv)
    print(f"hardware: {machine()}; load average {os.getloadavg()[0]:.2f} at the start")
    parts: list[Callable[[Server], list[Figure]]] = [
        lambda server: soak(server, args.streams, args.seconds),
        lambda server: cancels(server, args.cancels),
        dead_clients,
        lambda server: sequential(server, args.jobs),
    ]
    # The parts with a server of their own, each started as its turn comes.
    alone: list[Callable[[], list[Figure]]] = []
    if not args.reattach_only:
        alone.append(
            lambda: hostile_neighbours(
                args.slots,
                args.hostile_rounds,
                costly=args.hostile_costly,
                without_token=args.hostile_streams,
            )
        )
    if not args.hostile_only:
        alone.append(lambda: reattach(args.slots, args.reattach_jobs))
    failed = 0

    def report(figures: list[Figure]) -> None:
        nonlocal failed
        for figure in figures:
            print(figure.line(hardware()), flush=True)
            failed += not figure.passed

    if not (args.hostile_only or args.reattach_only):
        with serve(args.slots, queue_size=max(args.streams, args.slots)) as server:
            for part in parts:
                report(part(server))
    for own_server in alone:
        report(own_server())
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("all figures within their thresholds" if not failed else f"{failed} figures FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
