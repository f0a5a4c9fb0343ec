"""Prometheus metrics of the service, in a registry of their own per server.

A registry per server (not the process-global one) lets tests run several servers in one
process and keeps library metrics out of the scrape unless asked for.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

import torch
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

__all__ = ["Metrics"]

# Jobs last from a second (tiny sizes) to many minutes (large pictures on a CPU).
_JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_INSTANT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The service's metrics; ``serve`` exposes them on an HTTP port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...
        ProcessCollector(registry=self.registry)
        self.build = Info(
            "styleserve_build",
            "What this server runs: its version, torch's, the device and what auto precision is.",
            registry=self.registry,
        )
        self.device_memory = Gauge(
            "styleserve_device_memory_bytes",
            "CUDA memory held by tensors on the serving device (absent on CPU servers).",
            registry=self.registry,
        )
        self.requests = Counter(
            "styleserve_requests",
            "RPCs finished, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "styleserve_queue_depth", "Jobs waiting for a slot.", registry=self.registry
        )
        self.running_jobs = Gauge(
            "styleserve_running_jobs", "Jobs holding a slot.", registry=self.registry
        )
        self.queue_wait = Histogram(
            "styleserve_queue_wait_seconds",
            "Time jobs waited for a slot.",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "styleserve_job_duration_seconds",
            "Time jobs held a slot (decoding, set-up and optimisation).",
            ["outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        # A counter rather than a gauge: rate(styleserve_iterations_total[1m]) is the
        # iterations per second over any window, summed correctly across replicas.
        self.iterations = Counter(
            "styleserve_iterations",
            "Optimiser iterations run; its rate is the iterations per second.",
            registry=self.registry,
        )
        self.video_frames = Counter(
            "styleserve_video_frames",
            "Video frames stylised (StylizeVideo), by method; its rate is the frames per second.",
            ["method"],
            registry=self.registry,
        )
        # The instant tier admits its jobs apart, so that they never wait behind optimisations.
        self.instant_queue_depth = Gauge(
            "styleserve_instant_queue_depth",
            "Feed-forward jobs waiting for a slot.",
            registry=self.registry,
        )
        self.instant_running_jobs = Gauge(
            "styleserve_instant_running_jobs",
            "Feed-forward jobs holding a slot.",
            registry=self.registry,
        )
        self.instant_duration = Histogram(
            "styleserve_instant_duration_seconds",
            "Time feed-forward jobs held a slot (decoding, the network, encoding).",
            buckets=_INSTANT_BUCKETS,
            registry=self.registry,
        )
        # Registered styles (style_cache), by how a job named its style: "style_id", or
        # "pictures" sent again; a hit spares the job its style pictures' forward pass.
        self.style_cache_hits = Counter(
            "styleserve_style_cache_hits",
            "Jobs whose style the cache of registered styles held, by how they named it.",
            ["lookup"],
            registry=self.registry,
        )
        self.style_cache_misses = Counter(
            "styleserve_style_cache_misses",
            "Jobs whose style the cache did not hold (an unknown style_id is NOT_FOUND).",
            ["lookup"],
            registry=self.registry,
        )
        self.style_cache_evictions = Counter(
            "styleserve_style_cache_evictions",
            "Registered styles evicted, least recently used first, to stay within the bytes.",
            registry=self.registry,
        )
        self.style_cache_bytes = Gauge(
            "styleserve_style_cache_bytes",
            "Bytes the registered styles hold (pictures, Gram targets, style vectors).",
            registry=self.registry,
        )
        self.style_cache_entries = Gauge(
            "styleserve_style_cache_entries", "Registered styles held.", registry=self.registry
        )
        # Uploaded pictures (uploads), counted with the uploads in progress: the bytes the
        # store's bound covers.
        self.upload_store_bytes = Gauge(
            "styleserve_upload_store_bytes",
            "Bytes the uploaded pictures hold, uploads in progress included.",
            registry=self.registry,
        )
        self.upload_store_entries = Gauge(
            "styleserve_upload_store_entries", "Uploaded pictures held.", registry=self.registry
        )
        self.upload_evictions = Counter(
            "styleserve_upload_store_evictions",
            "Uploaded pictures dropped, by reason: expired, or room for newer uploads.",
            ["reason"],
            registry=self.registry,
        )
        # Detachable jobs (job_store): how often calls drop and come back, and what is kept.
        self.jobs_detached = Counter(
            "styleserve_jobs_detached",
            "Detachable jobs whose own call ended before they did (they ran on).",
            registry=self.registry,
        )
        self.jobs_reattached = Counter(
            "styleserve_jobs_reattached",
            "WatchJob calls that found their job.",
            registry=self.registry,
        )
        self.jobs_expired = Counter(
            "styleserve_jobs_expired",
            "Detachable jobs forgotten, by reason: retention (result kept its time), room "
            "(evicted for newer results) or deleted (DeleteOperation).",
            ["reason"],
            registry=self.registry,
        )
        self.jobs_unwatched = Counter(
            "styleserve_jobs_unwatched",
            "Detachable jobs cancelled because nobody watched them for the detach grace (each "
            "stays, cancelled, for the retention time).",
            registry=self.registry,
        )
        self.jobs_cancelled = Counter(
            "styleserve_jobs_cancelled",
            "Detachable jobs cancelled by id (CancelOperation) while they ran.",
            registry=self.registry,
        )
        self.jobs_resubmitted = Counter(
            "styleserve_jobs_resubmitted",
            "Detachable requests sent again with a kept job's request id, which followed that "
            "job instead of starting another.",
            registry=self.registry,
        )
        self.job_store_bytes = Gauge(
            "styleserve_job_store_bytes",
            "Bytes the kept events and results of detachable jobs hold.",
            registry=self.registry,
        )
        self.job_store_entries = Gauge(
            "styleserve_job_store_entries", "Detachable jobs held.", registry=self.registry
        )
        self._http: WSGIServer | None = None

    def describe(self, **build: str) -> None:
        """Fills in the build info once the server knows its device and precision, and follows
        the device's memory when it is a CUDA device."""
        self.build.info(build)
        device = torch.device(build["device"])
        if device.type == "cuda":
            self.device_memory.set_function(lambda: torch.cuda.memory_allocated(device))
        else:
            self.registry.unregister(self.device_memory)

    def admission_changed(self, queued: int, running: int) -> None:
        self.queue_depth.set(queued)
        self.running_jobs.set(running)

    def instant_admission_changed(self, queued: int, running: int) -> None:
        self.instant_queue_depth.set(queued)
        self.instant_running_jobs.set(running)

    def style_cache_changed(self, used_bytes: int, entries: int) -> None:
        self.style_cache_bytes.set(used_bytes)
        self.style_cache_entries.set(entries)

    def uploads_changed(self, used_bytes: int, entries: int) -> None:
        self.upload_store_bytes.set(used_bytes)
        self.upload_store_entries.set(entries)

    def jobs_changed(self, used_bytes: int, entries: int) -> None:
        self.job_store_bytes.set(used_bytes)
        self.job_store_entries.set(entries)

    def serve(self, host: str, port: int) -> None:
        """Serves /metrics on ``host:port`` from a daemon thread."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
