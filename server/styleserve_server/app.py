"""Assembles a styleserve server: gRPC, health, reflection, metrics, and its start and stop.

``create_server`` binds the port at once (so callers learn it, even when it was 0) but reports
NOT_SERVING until the weights (and the instant tier's networks) are loaded and warmed up,
which happens in the background after ``start`` so that orchestrators see a live,
not-yet-ready process. ``stop``
is the graceful path SIGTERM takes: NOT_SERVING, connections closed to new calls, running
jobs get the grace period, then the server closes.

With TLS (mTLS with a client CA) on the gRPC port, a second, plaintext port serves only
``grpc.health.v1`` from the same health servicer, because kubelet's gRPC probes cannot speak
TLS; it reports what the TLS port reports and closes after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import OVERALL_HEALTH
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import TracerProvider
from styleserve.options import BACKBONES, VGG_LAYERS
from styleserve.v1 import style_transfer_pb2 as pb
from styleserve_export.artifact import Backbone
from styleserve_export.loader import load_feed_forward

from styleserve_server import backbones, logs
from styleserve_server.access import MAX_HEALTH_REQUEST_BYTES, BoundedHealth, TokenGate
from styleserve_server.engine import (
    INSTANT_TILE_PIXELS,
    FeedForward,
    auto_precision,
    return_freed_memory,
)
from styleserve_server.engine.tiles import plan_tiles
from styleserve_server.inputs import admit_input_pixels
from styleserve_server.metrics import Metrics
from styleserve_server.operations import OPERATIONS_SERVICE
from styleserve_server.priority import background_thread
from styleserve_server.server_info import version
from styleserve_server.service import StyleTransferService, add_to_server
from styleserve_server.settings import Settings
from styleserve_server.tracing import Tracing

__all__ = ["OPERATIONS_NAME", "SERVICE_NAME", "STOP_JOBS_SECONDS", "StyleServer", "create_server"]

log = logging.getLogger(__name__)

# After the grace period: how long stopped jobs have to end their calls (within an iteration).
STOP_JOBS_SECONDS = 5.0

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransferService"].full_name
# google.longrunning.Operations, served beside it over its detachable jobs (``operations``).
OPERATIONS_NAME = OPERATIONS_SERVICE.full_name


class StyleServer:
    """A created server: ``start``, ``wait_ready``, ``stop``, ``wait_for_termination``."""

    def __init__(
        self,
        settings: Settings,
        server: grpc.aio.Server,
        port: int,
        service: StyleTransferService,
        health: health_aio.HealthServicer,
        metrics: Metrics,
        executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
        backbone: Backbone | None,
        health_only: tuple[grpc.aio.Server, int] | None = None,
        *,
        tracing: Tracing,
    ) -> None:
        self.settings = settings
        self.port = port
        self.grpc = server
        self._health_grpc: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if health_only is not None:
            self._health_grpc, self.health_port = health_only
        self.metrics = metrics
        self.health = health
        self._service = service
        self._executor, self._instant_executor = executors
        self._backbone = backbone
        self._tracing = tracing
        self._ready: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts serving (NOT_SERVING) and begins loading and warming up in the background."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.grpc.start()
        if self._health_grpc is not None:
            await self._health_grpc.start()
        if self.settings.metrics_port:
            try:
                self.metrics.serve(self.settings.host, self.settings.metrics_port)
            except OSError as error:
                raise RuntimeError(
                    f"cannot serve metrics on {self.settings.host}:{self.settings.metrics_port}"
                    f" ({error.strerror or error}): set metrics_port to a free port, or 0 for none"
                ) from None
        self._ready = asyncio.create_task(self._prepare())

    async def _prepare(self) -> None:
        started = time.monotonic()
        backbone = self._backbone
        if backbone is None:
            backbone = await asyncio.to_thread(backbones.load, self.settings)
        log.info(
            "weights loaded",
            extra={"backbone": backbone.name, "sha256": backbone.sha256, "device": backbone.device},
        )
        loop = asyncio.get_running_loop()
        # Made in the instant tier's own (background) thread: onnxruntime's pools inherit it.
        feed_forward = await loop.run_in_executor(
            self._instant_executor, self._load_feed_forward, backbone
        )
        # What "auto" precision means here is measured either way: receipts and GetServerInfo
        # report it, and no job should pay for the measurement.
        prepare = backbones.warm_up if self.settings.warmup else auto_precision
        precision = await loop.run_in_executor(self._executor, prepare, backbone)
        if self.settings.warmup and feed_forward is not None:
            await loop.run_in_executor(self._instant_executor, feed_forward.warm_up)
        self._service.serve(backbone, feed_forward, precision)
        self.metrics.describe(
            version=version(),
            torch=torch.__version__,
            device=str(backbone.device),
            backbone=backbone.name,
            precision=precision.precision,
            feed_forward="none" if feed_forward is None else feed_forward.name,
        )
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"ready_seconds": round(time.monotonic() - started, 3)})

    def _load_feed_forward(self, backbone: Backbone) -> FeedForward | None:
        if self.settings.feed_forward == "none":
            return None
        artifact = load_feed_forward(self.settings.feed_forward, cache_dir=self.settings.cache_dir)
        feed_forward = FeedForward(
            artifact,
            backbone.device,
            self.settings.feed_forward_thread_count(),
            # Always in tiles: they bound the memory and, above about 3 MP, are faster too.
            tile_pixels=INSTANT_TILE_PIXELS,
        )
        log.info(
            "feed-forward networks loaded",
            extra={
                "feed_forward": feed_forward.name,
                "sha256": feed_forward.sha256,
                "provider": feed_forward.provider,
            },
        )
        return feed_forward

    async def wait_ready(self) -> None:
        """Returns once SERVING; raises what stopped loading (e.g. a missing artifact)."""
        assert self._ready is not None, "start() the server first"
        await asyncio.shield(self._ready)

    async def stop(self, grace: float | None = None) -> None:
        """Drains and closes: NOT_SERVING, connections closed (GOAWAY) so that clients send
        new calls elsewhere at once, queued calls get UNAVAILABLE, running jobs have ``grace``
        seconds (default: the settings') to finish, then are cancelled."""
        grace = self.settings.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self._service.drain()
        # Stopping gRPC right away, not after the jobs: an open connection would keep getting
        # its round_robin share of new calls, only to refuse them, for the whole grace period.
        # gRPC's own cut-off comes a little after the grace period, so that the jobs still
        # running then end their calls with UNAVAILABLE, the status the server logs too.
        closing = asyncio.ensure_future(self.grpc.stop(grace + STOP_JOBS_SECONDS))
        idle = asyncio.ensure_future(self._service.idle())
        if self._service.running and not (await asyncio.wait({idle}, timeout=grace))[0]:
            log.warning("grace period of %.0f s over: stopping the running jobs", grace)
            self._service.stop_jobs()
            await asyncio.wait({idle}, timeout=STOP_JOBS_SECONDS)
            idle.cancel()
        # Before gRPC's cut-off: a watcher of a job that is still going hears UNAVAILABLE now,
        # and no timer of a kept job outlives the server.
        self._service.close()
        await closing
        if self._health_grpc is not None:
            # Closed last: until the TLS port is gone, probes read NOT_SERVING rather than a
            # refused connection.
            await self._health_grpc.stop(0)
        if self._ready is not None and not self._ready.done():
            self._ready.cancel()
        self.metrics.close()
        # Cancelled jobs stop within one iteration; wait for their threads to let go.
        for executor in (self._executor, self._instant_executor):
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        # Last: the spans of the jobs just stopped are among those still to send.
        await asyncio.to_thread(self._tracing.shutdown)

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()

    async def _set_health(self, status: int) -> None:  # a HealthCheckResponse.ServingStatus
        for service in (OVERALL_HEALTH, SERVICE_NAME, OPERATIONS_NAME):
            await self.health.set(service, status)


def _server_options(settings: Settings, max_receive_bytes: int) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        # Without this a second server could bind the same port and steal half the calls.
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # A fixed per-stream receive window instead of one grown by BDP probing (to megabytes
        # on a fast link): the most a stream sends before the server reads it, so what a
        # caller refused from its headers can make the server buffer.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", settings.stream_window_bytes),
    ]
    if settings.max_connection_age_seconds:
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)),
            # A stylisation stream may run for many minutes: the aged connection takes no new
            # calls but keeps its running ones for the grace, which bounds how long a caller
            # that never finishes sending a request can hold a connection.
            (
                "grpc.max_connection_age_grace_ms",
                round(settings.connection_age_grace_seconds * 1000),
            ),
        ]
    return options


def _token_gate(settings: Settings, metrics: Metrics) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor that checks the token from the headers (none without a token)."""
    if settings.auth_token is None:
        return []

    def refused(method: str, request_id: str) -> None:
        # Counted and logged as the servicer counts and logs the calls it ends.
        token = logs.request_id.set(request_id)
        try:
            metrics.requests.labels(method, "UNAUTHENTICATED").inc()
            log.info("%s UNAUTHENTICATED", method, extra={"code": "UNAUTHENTICATED"})
        finally:
            logs.request_id.reset(token)

    gate = TokenGate(
        settings.auth_token.get_secret_value(),
        open_reflection=settings.open_reflection,
        refused=refused,
    )
    return [gate]


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port (client certificates required with a client CA), or
    None for plaintext. The files are read here, once: a renewed certificate needs a restart."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=None if client_ca is None else client_ca.read_bytes(),
        require_client_auth=client_ca is not None,
    )


def _listen(
    server: grpc.aio.Server,
    host: str,
    port: int,
    flag: str,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Binds ``server`` to ``host:port``; the port bound (the free one picked for 0)."""
    address = f"{host}:{port}"
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot listen on {address} ({error}): choose another {flag} or --host"
        ) from error


def _check_tile_budget(settings: Settings) -> None:
    """Raises RuntimeError, naming what to change, when ``settings.tile_pixels`` cannot hold
    one tile of the served network's deepest layers (VGG19's need more than the least the
    setting allows): a job naming them would otherwise fail at its first tiled stage."""
    arch = BACKBONES[settings.backbone]
    # The least tile a plan needs is the same at every size past a few strides: a picture of
    # four tiles' area tells it as the largest allowed would, for a sixteenth of the planning
    # at the default sizes (0.3 s at 8192 px, on every start).
    side = min(settings.max_output_side, 2 * math.isqrt(settings.tile_pixels))
    try:
        plan_tiles(side, side, settings.tile_pixels, arch, VGG_LAYERS[arch])
    except ValueError as error:
        raise RuntimeError(
            f"--tile-pixels {settings.tile_pixels} is too small for {settings.backbone}'s "
            f"deepest layers ({error})"
        ) from error


def _background_pool(threads: int, name: str) -> ThreadPoolExecutor:
    """A pool whose threads run below the event loop's priority (``priority``)."""
    return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=background_thread)


def create_server(
    settings: Settings,
    *,
    backbone: Backbone | None = None,
    tracer_provider: TracerProvider | None = None,
) -> tuple[StyleServer, int]:
    """A server for ``settings`` bound to its port (returned; useful when settings.port is 0).

    Call it from the event loop that will run the server, then ``await server.start()``.
    ``backbone`` serves that network instead of loading ``settings.backbone`` (tests).
    ``tracer_provider`` takes the server's spans instead of a provider exporting to
    ``settings.tracing_endpoint`` (tests: an in-memory exporter's; its caller shuts it down). With
    TLS, the plaintext health-only port is bound too (``StyleServer.health_port``).
    """
    # Freed tiles must leave the process, or its resident memory outgrows what admission
    # predicts by a third (measured at 12 MP: 3.78 GiB against 2.57 GiB).
    if not return_freed_memory():
        log.warning("could not set the C allocator's mapping threshold: RSS may exceed the budget")
    admit_input_pixels(settings.limits())
    _check_tile_budget(settings)
    metrics = Metrics()
    executors = (
        _background_pool(settings.job_slots, "styleserve-job"),
        _background_pool(settings.feed_forward_slots, "styleserve-instant"),
    )
    tracing = Tracing.configure(settings.tracing_endpoint, tracer_provider)
    service = StyleTransferService(settings, metrics, *executors, tracing)
    server = grpc.aio.server(
        options=_server_options(settings, settings.max_request_bytes),
        # Tracing outermost: a call the token gate refuses gets its span too.
        interceptors=[*tracing.interceptors(), *_token_gate(settings, metrics)],
    )
    health = BoundedHealth()
    add_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, OPERATIONS_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    credentials = _server_credentials(settings)
    port = _listen(server, host, settings.port, "--port", credentials)
    health_only = None
    if credentials is not None:
        # Only the health service, not reflection: nothing else is reachable without TLS. Its
        # requests are a service name: nothing larger is read.
        health_server = grpc.aio.server(options=_server_options(settings, MAX_HEALTH_REQUEST_BYTES))
        health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
        health_only = (
            health_server,
            _listen(health_server, host, settings.health_port, "--health-port"),
        )
    styleserver = StyleServer(
        settings,
        server,
        port,
        service,
        health,
        metrics,
        executors,
        backbone,
        health_only,
        tracing=tracing,
    )
    return styleserver, port
