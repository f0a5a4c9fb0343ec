"""Every knob of the server in one typed, validated place.

Values come from command-line flags, then ``STYLESERVE_*`` environment variables, then the
defaults below (safe for a laptop: loopback only, one job at a time, no metrics port).
Validation runs at start-up so that a bad value stops the server with a message naming the
setting instead of failing on the first request.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict
from styleserve.options import (
    BACKBONES,
    CEILINGS,
    DEFAULT_PORT,
    KERAS_VGG16,
    LIMITS,
    MAGENTA_FEED_FORWARD,
    TINY_FEED_FORWARD,
    TINY_VGG16,
    TORCHVISION_VGG16,
    TORCHVISION_VGG19,
    Limits,
    StyleOptions,
)

__all__ = ["MIN_TILE_PIXELS", "TILE_PIXELS", "Settings"]

_DEFAULTS = StyleOptions()
# The instant tier's networks a server may load, or none.
_FEED_FORWARDS = (MAGENTA_FEED_FORWARD, TINY_FEED_FORWARD, "none")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
# gRPC takes the connection age in milliseconds, as a C int.
_MAX_CONNECTION_AGE = (2**31 - 1) // 1000
_TLS_FILES = ("tls_cert_file", "tls_key_file", "tls_client_ca_file")
_COLLECTOR = re.compile(r"^https?://[^/\s]+/?$")
# A tile of 1024 x 1024 pixels, halo included: an evaluation's working memory of 1.2 GB in
# bfloat16, and halos that add 21-24% to the pixels evaluated from 4 to 24 MP (15% at 2 MP
# tiles, 38% at 0.5 MP). A default-preset job at 12 MP then peaked at 2.65 GB (a 2-core AMD
# EPYC), room for the allocator's slack under the 4 GB it must stay below.
TILE_PIXELS = 2**20
# The least tile budget: a 256 x 256 window, of which VGG16's halos leave a sliver.
MIN_TILE_PIXELS = 2**16
# The share of the device's memory a measured memory budget gives the jobs: the rest is the
# allocator's fragmentation, the gRPC buffers and the decoded pictures waiting in the queue.
MEMORY_SHARE = 0.8


def _no_password() -> bytes:
    # gRPC cannot load an encrypted key; without this callback OpenSSL would prompt on the tty.
    return b""


class Settings(BaseSettings):
    """Settings of ``styleserve-server``; flag ``--job-slots`` is env ``STYLESERVE_JOB_SLOTS``."""

    model_config = SettingsConfigDict(
        env_prefix="STYLESERVE_",
        cli_prog_name="styleserve-server",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        # "--cache-dir Path", not "{Path,null}": an unset option is left out, never typed null.
        cli_hide_none_type=True,
        extra="forbid",
    )

    host: str = Field(
        "127.0.0.1",
        description="Address to bind; containers set 0.0.0.0 to accept traffic from outside.",
    )
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    backbone: str = Field(
        _DEFAULTS.backbone,
        description=f"Weights to serve: {KERAS_VGG16}, {TORCHVISION_VGG16}, {TORCHVISION_VGG19} "
        f"(exported by styleserve-export), or {TINY_VGG16}, an untrained test network.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Export cache holding the weight artifacts; unset: the exporter's default "
        "(styleserve_export.loader.default_cache_dir()).",
    )
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda[:N].")
    job_slots: int = Field(1, ge=1, le=64, description="Jobs running at once on the device.")
    queue_size: int = Field(8, ge=0, le=10_000, description="Jobs that may wait for a slot.")
    # The per-request limits (styleserve.options.Limits, one setting each): a server may raise
    # them up to styleserve.options.CEILINGS, and clients leave these ranges to the server.
    max_request_bytes: int = Field(
        LIMITS.max_request_bytes, ge=1024, le=CEILINGS.max_request_bytes,
        description="Largest request (gRPC message limit).",
    )  # fmt: skip
    max_image_bytes: int = Field(
        LIMITS.max_image_bytes, ge=1024, le=CEILINGS.max_image_bytes,
        description="Largest encoded picture in a request.",
    )  # fmt: skip
    max_input_pixels: int = Field(
        LIMITS.max_input_pixels, ge=1, le=CEILINGS.max_input_pixels,
        description="Most pixels of a picture, read from its header.",
    )  # fmt: skip
    max_output_side: int = Field(
        LIMITS.max_output_side, ge=LIMITS.min_output_side, le=CEILINGS.max_output_side,
        description="Longest output side.",
    )  # fmt: skip
    max_iterations: int = Field(
        LIMITS.max_iterations, ge=1, le=CEILINGS.max_iterations, description="Most iterations."
    )
    max_evals_per_iteration: int = Field(
        LIMITS.max_evals_per_iteration, ge=1, le=CEILINGS.max_evals_per_iteration,
        description="Most loss evaluations per L-BFGS iteration.",
    )  # fmt: skip
    max_styles: int = Field(
        LIMITS.max_styles, ge=1, le=CEILINGS.max_styles, description="Most style pictures."
    )
    max_preview_size: int = Field(
        LIMITS.max_preview_size, ge=LIMITS.min_output_side, le=CEILINGS.max_preview_size,
        description="Longest preview side a request may ask for.",
    )  # fmt: skip
    min_output_side: int = Field(
        LIMITS.min_output_side, ge=CEILINGS.min_output_side, le=CEILINGS.max_output_side,
        description="Shortest output side.",
    )  # fmt: skip
    max_scales: int = Field(
        LIMITS.max_scales, ge=1, le=CEILINGS.max_scales,
        description="Most entries of a request's scales (its coarse-to-fine stages).",
    )  # fmt: skip
    max_layers: int = Field(
        LIMITS.max_layers, ge=1, le=CEILINGS.max_layers,
        description="Most entries of each of content_layers, style_layers, style_layer_weights.",
    )  # fmt: skip
    max_name_length: int = Field(
        LIMITS.max_name_length, ge=16, le=CEILINGS.max_name_length,
        description="Most characters of a string option (preset, backbone, a layer name).",
    )  # fmt: skip
    memory_budget_bytes: int = Field(
        LIMITS.memory_budget_bytes, ge=0, le=CEILINGS.memory_budget_bytes,
        description="Bytes of memory the running jobs may hold at once: each job's predicted "
        "peak counts against it, a job that waits for room queues, and one that could never "
        "fit is refused (RESOURCE_EXHAUSTED) with the largest size that would. 0: measured at "
        f"start-up, {MEMORY_SHARE:.0%} of the device's memory (a container's limit on CPU) "
        "less what the server holds by then and, on CPU, less the caps of its in-memory stores "
        "(upload_store_bytes, style_cache_bytes, job_store_bytes).",
    )  # fmt: skip
    max_video_frames: int = Field(
        LIMITS.max_video_frames, ge=1, le=CEILINGS.max_video_frames,
        description="Most frames of one StylizeVideo call; a longer clip is sent as several "
        "calls (chunks), which a balancer spreads over replicas.",
    )  # fmt: skip
    max_video_fps: int = Field(
        LIMITS.max_video_fps, ge=1, le=CEILINGS.max_video_fps,
        description="Highest frame rate of a StylizeVideo call.",
    )  # fmt: skip
    max_frames_in_flight: int = Field(
        LIMITS.max_frames_in_flight, ge=1, le=CEILINGS.max_frames_in_flight,
        description="Frames of a StylizeVideo call read but not yet answered: a caller that "
        "reads its answers slowly slows the reading of its frames, so a call holds at most "
        "this many frames in the server.",
    )  # fmt: skip
    stream_idle_seconds: int = Field(
        LIMITS.stream_idle_seconds, ge=1, le=CEILINGS.stream_idle_seconds,
        description="Longest the server waits for a streaming call's next message (an "
        "UploadPicture chunk, a StylizeVideo frame), or for its caller to read a StylizeVideo "
        "answer, before it ends the call DEADLINE_EXCEEDED and frees the slot or the upload "
        "store's room it held.",
    )  # fmt: skip
    tile_pixels: int = Field(
        TILE_PIXELS, ge=MIN_TILE_PIXELS, le=CEILINGS.max_input_pixels,
        description="Most pixels of a picture the network sees at once: a larger stage's loss "
        "and gradient are computed in tiles of about this many pixels (halos included), equal "
        "to the whole picture's, so a job's memory stays flat as its picture grows.",
    )  # fmt: skip
    preview_size: int = Field(
        _DEFAULTS.preview_size, ge=LIMITS.min_output_side, le=CEILINGS.max_preview_size,
        description="Longest side of previews when a request leaves it 0.",
    )  # fmt: skip
    output_quality: int = Field(
        _DEFAULTS.output_quality, ge=1, le=100,
        description="JPEG/WebP quality when a request leaves it 0.",
    )  # fmt: skip
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus HTTP port; 0: off.")
    grace_seconds: float = Field(
        25.0, ge=0, description="On SIGTERM, how long running jobs may finish before they stop."
    )
    max_connection_age_seconds: float = Field(
        300.0, ge=0, le=_MAX_CONNECTION_AGE,
        description="Close each client connection (GOAWAY) after about this long, so that "
        "round_robin clients re-resolve and find new replicas; running calls go on for up to "
        "connection_age_grace_seconds. 0: never.",
    )  # fmt: skip
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The least level logged (any case)."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: one object a line with a request_id, for log collectors; text: one "
        "line a record for people.",
    )
    auth_token: SecretStr | None = Field(
        None,
        description="When set, every call needs the metadata 'authorization: Bearer <token>', "
        "checked from the headers before the request is read; only grpc.health.v1 Check (for "
        "probes) stays open, and reflection with open_reflection. Surrounding whitespace (a "
        "Secret file's newline) is dropped. Prefer the environment variable: flags show in "
        "process listings.",
    )
    open_reflection: bool = Field(
        False,
        description="With auth_token: serve gRPC reflection without the token (it lists every "
        "service and message of the contract).",
    )
    max_concurrent_streams: int = Field(
        100, ge=1, le=100_000,
        description="Calls one client connection may have open at once (HTTP/2 "
        "MAX_CONCURRENT_STREAMS); a client queues the rest itself.",
    )  # fmt: skip
    stream_window_bytes: int = Field(
        1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024,
        description="Bytes one call may send before the server reads them (its HTTP/2 "
        "receive window): bounds what a caller refused from its headers makes the server "
        "buffer; uploads over a link with a long round trip go at most this much per round "
        "trip.",
    )  # fmt: skip
    connection_age_grace_seconds: float = Field(
        3600.0, ge=0, le=_MAX_CONNECTION_AGE,
        description="How long an aged connection (max_connection_age_seconds) keeps its open "
        "calls before it is closed: the longest a call can hold a connection past its age.",
    )  # fmt: skip
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain of the gRPC port; set with tls_key_file to serve "
        "TLS. Read at start-up only: restart to load a renewed certificate.",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key (unencrypted) of tls_cert_file."
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates for mTLS: clients must present a certificate "
        "signed by one of them, or the handshake fails. Needs tls_cert_file.",
    )
    health_port: int = Field(
        50052, ge=0, le=65535,
        description="With TLS: a plaintext port serving only grpc.health.v1, for kubelet "
        "gRPC probes (which cannot speak TLS); 0 picks a free one. Without TLS the gRPC port "
        "serves health itself, and setting this is an error.",
    )  # fmt: skip
    warmup: bool = Field(True, description="Run one tiny job before reporting SERVING.")
    feed_forward: str = Field(
        MAGENTA_FEED_FORWARD,
        description="Feed-forward networks of the instant tier (method feed_forward, init "
        f"feed_forward, the iteration-0 preview): {MAGENTA_FEED_FORWARD} (exported by "
        f"styleserve-export --source {MAGENTA_FEED_FORWARD}), {TINY_FEED_FORWARD} (an "
        "untrained test network) or none (no instant tier; such requests get "
        "FAILED_PRECONDITION).",
    )
    feed_forward_slots: int = Field(
        2, ge=1, le=64, description="Feed-forward jobs running at once (beside the job slots)."
    )
    feed_forward_queue_size: int = Field(
        32, ge=0, le=10_000, description="Feed-forward jobs that may wait for a slot."
    )
    feed_forward_threads: int = Field(
        0, ge=0, le=256,
        description="onnxruntime threads per feed-forward job; 0: the cores divided by "
        "feed_forward_slots.",
    )  # fmt: skip
    style_cache_bytes: int = Field(
        256 * 2**20, ge=0,
        description="Bytes the registered styles (RegisterStyle) may hold in memory, least "
        "recently used evicted first; a VGG16 style takes about 2.4 MB per resolution plus its "
        "encoded pictures. 0: registration is off (RegisterStyle and style_id requests get "
        "FAILED_PRECONDITION).",
    )  # fmt: skip
    upload_store_bytes: int = Field(
        2**30, ge=0,
        description="Bytes the uploaded pictures (UploadPicture) may hold in memory, uploads in "
        "progress included; the least recently used make room for new ones. 0: uploads are off "
        "(UploadPicture and upload_id requests get FAILED_PRECONDITION).",
    )  # fmt: skip
    max_upload_bytes: int = Field(
        256 * 2**20, ge=1024,
        description="Largest single upload (an encoded picture); a smaller upload_store_bytes "
        "lowers it to that.",
    )  # fmt: skip
    upload_expire_seconds: int = Field(
        3600, ge=1, le=2**32 - 1,
        description="How long an upload is kept after it was last stored or used (a job holds "
        "its pictures from the moment it is accepted).",
    )  # fmt: skip

    job_store_bytes: int = Field(
        256 * 2**20, ge=0,
        description="Bytes the kept events and results of detachable jobs "
        "(StyleTransferRequest.detachable) may hold, the oldest finished evicted first (a "
        "running job's events are never dropped). 0: detachable jobs are off (such requests "
        "get FAILED_PRECONDITION).",
    )  # fmt: skip
    detach_grace_seconds: int = Field(
        60, ge=1, le=2**32 - 1,
        description="How long a detachable job whose call ended keeps running with nobody "
        "watching it (WatchJob) before it is cancelled and its slot freed.",
    )  # fmt: skip
    job_retention_seconds: int = Field(
        3600, ge=1, le=2**32 - 1,
        description="How long a finished detachable job's result is kept for WatchJob.",
    )  # fmt: skip
    advertise_address: str = Field(
        "",
        max_length=256,
        description="The address that reaches this replica directly (host:port, e.g. the "
        "pod's IP from the Kubernetes downward API), sent as Started.replica so that a "
        "detachable job is watched where it runs behind a balancer. Empty: not sent.",
    )
    tracing_endpoint: str | None = Field(
        None,
        max_length=256,
        description="OTLP/gRPC collector to send OpenTelemetry traces to, as http://host:port "
        "(https:// for TLS), e.g. http://otel-collector:4317: each call's span, the child of the "
        "caller's (W3C traceparent), with spans for a job's queue, set-up, optimisation and "
        "encoding. The service is named styleserve unless OTEL_SERVICE_NAME says otherwise; "
        "the exporter's OTEL_EXPORTER_OTLP_* variables apply. Unset: no tracing.",
    )

    @field_validator("backbone")
    @classmethod
    def _servable(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"{value!r} is not a backbone: use one of {', '.join(BACKBONES)}")
        return value

    @field_validator("feed_forward")
    @classmethod
    def _loadable(cls, value: str) -> str:
        if value not in _FEED_FORWARDS:
            raise ValueError(
                f"{value!r} is not a feed-forward network: use one of {', '.join(_FEED_FORWARDS)}"
            )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N")
        return value

    @field_validator(*_TLS_FILES)
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        # Read now, not at the first handshake: a missing or unreadable Secret stops start-up.
        if value is not None:
            try:
                value.read_bytes()
            except OSError as error:
                raise ValueError(f"cannot read {value}: {error.strerror or error}") from None
        return value

    @field_validator("auth_token")
    @classmethod
    def _stripped(cls, value: SecretStr | None) -> SecretStr | None:
        # A token read from a file keeps its trailing newline, which no client can send.
        return None if value is None else SecretStr(value.get_secret_value().strip())

    @field_validator("tracing_endpoint")
    @classmethod
    def _collector_url(cls, value: str | None) -> str | None:
        # The exporter reads a bare "host:port" as a scheme and dials TLS to nowhere.
        if value is not None and not _COLLECTOR.match(value):
            raise ValueError(
                f"{value!r} is not a collector address: use http://host:port, or https:// for "
                "TLS (e.g. http://otel-collector:4317)"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_image_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_image_bytes ({self.max_image_bytes}) exceeds max_request_bytes "
                f"({self.max_request_bytes}): a request holds at least one picture"
            )
        if self.min_output_side > self.max_output_side:
            raise ValueError(
                f"min_output_side ({self.min_output_side}) exceeds max_output_side "
                f"({self.max_output_side})"
            )
        if not self.min_output_side <= self.preview_size <= self.max_preview_size:
            raise ValueError(
                f"preview_size ({self.preview_size}) must lie between min_output_side "
                f"({self.min_output_side}) and max_preview_size ({self.max_preview_size})"
            )
        if self.auth_token is not None and not self.auth_token.get_secret_value():
            raise ValueError("auth_token is empty: unset it to disable authentication")
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(
                f"metrics_port ({self.metrics_port}) must differ from port: the metrics are "
                "served over HTTP beside the gRPC port"
            )
        return self

    @model_validator(mode="after")
    def _tls_consistent(self) -> Settings:
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_key_file is set without tls_cert_file: set both to serve TLS")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file: a server "
                "verifies client certificates only over TLS"
            )
        if self.tls_cert_file is not None and self.tls_key_file is None:
            raise ValueError("tls_cert_file is set without tls_key_file: set both to serve TLS")
        if self.tls_cert_file is None or self.tls_key_file is None:
            if "health_port" in self.model_fields_set:
                raise ValueError(
                    "health_port is set but TLS is off: the gRPC port serves health in "
                    "plaintext already; set tls_cert_file and tls_key_file, or unset health_port"
                )
            return self
        if self.health_port and self.health_port in (self.port, self.metrics_port):
            raise ValueError(
                f"health_port ({self.health_port}) must differ from port ({self.port}) and "
                f"metrics_port ({self.metrics_port})"
            )
        # The same checks gRPC's BoringSSL makes when it binds the port, which would report
        # only "failed to bind": here the message names the setting and OpenSSL's reason.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file, _no_password)
        except ssl.SSLError as error:
            raise ValueError(
                f"tls_cert_file ({self.tls_cert_file}) and tls_key_file ({self.tls_key_file}) "
                f"are not a PEM certificate chain and its unencrypted private key: {error}"
            ) from None
        if self.tls_client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.tls_client_ca_file)
            except ssl.SSLError as error:
                raise ValueError(
                    f"tls_client_ca_file ({self.tls_client_ca_file}) holds no PEM CA "
                    f"certificate: {error}"
                ) from None
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether the gRPC port serves TLS (and the health-only port runs beside it)."""
        return self.tls_cert_file is not None

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None) -> Settings:
        """Settings from flags (``argv``; None reads ``sys.argv``), the environment, defaults."""
        return CliApp.run(cls, cli_args=None if argv is None else list(argv))

    def feed_forward_thread_count(self) -> int:
        """onnxruntime threads per feed-forward job: the setting, or the cores shared out."""
        if self.feed_forward_threads:
            return self.feed_forward_threads
        return max(1, (os.cpu_count() or 1) // self.feed_forward_slots)

    def limits(self) -> Limits:
        """The per-request limits in force, for ``styleserve.options.resolve``."""
        return Limits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Limits)})
