"""Fixtures for real servers on loopback ports (owned by the service tests).

``start_server`` runs a real grpc.aio styleserve server in a background thread with its own
event loop, so that tests (and the client's tests) talk to it over a real loopback socket
with ordinary blocking or asyncio clients. By default it serves the tiny test network
(VGG16's shape, 1/16 of the channels) and skips the warm-up, so that it starts in
milliseconds and needs no weight artifact; ``backbone=`` serves another one (e.g. the real
VGG16 from the ``vgg16_cache`` fixture, loaded with ``styleserve_export.loader``).

    def test_x(start_server):
        with start_server(job_slots=1, queue_size=0) as srv:
            channel = grpc.insecure_channel(srv.target)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import free_port as free_port  # the tests' too (metrics ports, absent servers)
from opentelemetry.trace import TracerProvider
from styleserve.options import BACKBONES
from styleserve_export.artifact import TINY_BACKBONE, Backbone
from styleserve_export.loader import tiny_backbone
from styleserve_server.app import StyleServer, create_server
from styleserve_server.settings import Settings

T = TypeVar("T")

# What a test server differs in from the shipped defaults: any free port, no warm-up, no
# waiting for running jobs when the test is over, and the tiny feed-forward pair (the backbone
# comes from the served network).
TEST_SETTINGS: dict[str, Any] = {
    "port": 0,
    "warmup": False,
    "grace_seconds": 0.0,
    "log_format": "text",
    # The untrained feed-forward pair, built in memory: the instant tier without an artifact.
    "feed_forward": "tiny-arbitrary",
}


def health(target: str, service: str = "") -> int:
    """The health status ``target`` reports for ``service`` ("" is the whole server)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_draining(target: str, timeout: float = 120) -> None:
    """Returns once ``target`` drains: it says NOT_SERVING or, its listener closed, refuses
    connections (a draining server closes it at once, so NOT_SERVING may never be seen); a
    check that arrived just as it stopped is cancelled."""
    end = time.monotonic() + timeout
    while True:
        try:
            if health(target) == NOT_SERVING:
                return
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                return
            raise
        assert time.monotonic() < end, "the server never began to drain"
        time.sleep(0.05)


@dataclass
class RunningServer:
    """A server running in a background thread; ``target`` is what clients dial."""

    target: str
    port: int
    settings: Settings
    server: StyleServer
    loop: asyncio.AbstractEventLoop
    _stop: Callable[[float], None]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Runs ``coro`` on the server's event loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Drains and stops the server as SIGTERM would (grace: the settings' by default)."""
        self._stop(self.settings.grace_seconds if grace is None else grace)


@contextlib.contextmanager
def serve_in_thread(
    backbone: Backbone | None = None,
    *,
    wait_ready: bool = True,
    tracer_provider: TracerProvider | None = None,
    **overrides: Any,
) -> Iterator[RunningServer]:
    """A running server for ``TEST_SETTINGS`` updated with ``overrides``; stopped on exit.
    ``tracer_provider`` receives its spans (``create_server``'s)."""
    if backbone is None:
        backbone = _shared_tiny_backbone()
    values = {**TEST_SETTINGS, "backbone": _settings_name(backbone), **overrides}
    settings = Settings(**values)
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, StyleServer]]
    started = concurrent.futures.Future()
    stop_grace: list[float] = []
    stopped = threading.Event()
    stop_requested: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop_requested
        stop_requested = asyncio.Event()
        try:
            server, port = create_server(
                settings, backbone=backbone, tracer_provider=tracer_provider
            )
        except BaseException as error:
            started.set_exception(error)
            return
        try:
            await server.start()
            if wait_ready:
                await server.wait_ready()
        except BaseException as error:
            # Stopped before this loop closes: a gRPC server collected later, its loop gone,
            # would hang the interpreter's last garbage collection.
            await server.stop(0)
            started.set_exception(error)
            return
        started.set_result((asyncio.get_running_loop(), server, port))
        await stop_requested.wait()
        await server.stop(stop_grace[0])

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="styleserve-test-server")
    thread.start()
    loop, server, port = started.result(timeout=120)

    def stop(grace: float) -> None:
        if stopped.is_set():
            return
        stop_grace.append(grace)
        assert stop_requested is not None
        loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout=grace + 60)
        stopped.set()
        if thread.is_alive():
            raise RuntimeError("the test server did not stop within its grace period + 60 s")

    running = RunningServer(
        target=f"127.0.0.1:{port}",
        port=port,
        settings=settings,
        server=server,
        loop=loop,
        _stop=stop,
    )
    try:
        yield running
    finally:
        running.stop(0)


@functools.cache
def _shared_tiny_backbone() -> Backbone:
    """One tiny network for every test server of the process: frozen, it is never changed by a
    job, and the server's start-up measurement of "auto" precision runs once per network."""
    return tiny_backbone()


def _settings_name(backbone: Backbone) -> str:
    """The settings' name for ``backbone``: its own when servable, else the tiny network's."""
    return backbone.name if backbone.name in BACKBONES else TINY_BACKBONE


@pytest.fixture
def start_server() -> Callable[..., contextlib.AbstractContextManager[RunningServer]]:
    """Factory: ``with start_server(**settings_overrides) as srv`` (``backbone=`` too)."""
    return serve_in_thread


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """One running server with the test defaults (tiny network, one slot, queue of 8)."""
    with serve_in_thread() as running:
        yield running
