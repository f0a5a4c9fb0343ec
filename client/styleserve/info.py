"""What a server says about itself (``GetServerInfo``), as plain typed data.

``styleserve info`` prints it, and callers read limits and presets from it before sending a
job (e.g. to size pictures under ``max_output_side``) without touching protobuf messages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from styleserve.convert import effective_options, from_proto
from styleserve.events import FeedForwardInfo, PrecisionChoice, _fields, provenance
from styleserve.options import Limits, StyleOptions
from styleserve.v1 import style_transfer_pb2 as pb

__all__ = ["JobStoreInfo", "ServerInfo", "ServerLimits", "StyleCacheInfo", "UploadStoreInfo"]


@dataclass(frozen=True)
class ServerLimits(Limits):
    """The limits in force on the server for one request, and its capacity."""

    job_slots: int = 0
    queue_size: int = 0
    # The instant tier's own (0: a server too old to say).
    feed_forward_slots: int = 0
    feed_forward_queue_size: int = 0

    def slots_for(self, method: str) -> int:
        """The slots that run jobs of ``method`` (StyleOptions.method) at once."""
        if method == "feed_forward" and self.feed_forward_slots:
            return self.feed_forward_slots
        return self.job_slots


_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(ServerLimits))


@dataclass(frozen=True)
class StyleCacheInfo:
    """The server's cache of registered styles (RegisterStyle)."""

    # Most bytes it may hold; 0: registration is off.
    max_bytes: int
    used_bytes: int
    entries: int

    @classmethod
    def from_proto(cls, message: pb.StyleCacheInfo) -> StyleCacheInfo:
        return cls(message.max_bytes, message.used_bytes, message.entries)


@dataclass(frozen=True)
class UploadStoreInfo:
    """The server's store of uploaded pictures (UploadPicture), which lets a request name a
    picture larger than it may carry."""

    # Most bytes it may hold; 0: uploads are off.
    max_bytes: int
    used_bytes: int
    # Seconds an upload is kept after it was last stored or used.
    expire_seconds: int
    max_upload_bytes: int

    @classmethod
    def from_proto(cls, message: pb.UploadStoreInfo) -> UploadStoreInfo:
        return cls(**_fields(message, cls))


@dataclass(frozen=True)
class JobStoreInfo:
    """The server's store of detachable jobs (StyleTransferRequest.detachable, WatchJob)."""

    # Seconds a detachable job runs on unwatched after its call ended.
    detach_grace_seconds: int
    # Seconds a finished job's result is kept.
    retention_seconds: int
    # Most bytes the kept events and results may hold; 0: detachable jobs are off.
    max_bytes: int
    used_bytes: int

    @classmethod
    def from_proto(cls, message: pb.JobStoreInfo) -> JobStoreInfo:
        return cls(**_fields(message, cls))


@dataclass(frozen=True)
class ServerInfo:
    """A server's version, weights, presets, device, limits and delivery defaults."""

    version: str
    torch_version: str
    device: str
    backbones: tuple[str, ...]
    presets: dict[str, StyleOptions]
    limits: ServerLimits
    default_delivery: dict[str, Any]
    # The instant tier; None: this server has none (feed-forward requests fail).
    feed_forward: FeedForwardInfo | None
    # What precision "auto" resolves to there, and why.
    precision_choice: PrecisionChoice | None
    # Its registered styles; None: a server too old to register styles.
    style_cache: StyleCacheInfo | None
    # Its uploaded pictures; None: a server too old to take uploads.
    uploads: UploadStoreInfo | None
    # Its detachable jobs; None: a server too old to keep them.
    jobs: JobStoreInfo | None = None

    @classmethod
    def from_proto(cls, message: pb.GetServerInfoResponse) -> ServerInfo:
        # With empty StyleOptions, the overrides are the delivery fields alone.
        delivery = from_proto(pb.StyleOptions(), message.default_delivery)[1]
        return cls(
            version=message.version,
            torch_version=message.torch_version,
            device=message.device,
            backbones=tuple(message.backbones),
            presets={p.name: effective_options(p.options) for p in message.presets},
            limits=ServerLimits(**{name: getattr(message.limits, name) for name in _LIMIT_FIELDS}),
            default_delivery=delivery,
            **provenance(message),
            style_cache=StyleCacheInfo.from_proto(message.style_cache)
            if message.HasField("style_cache")
            else None,
            uploads=UploadStoreInfo.from_proto(message.uploads)
            if message.HasField("uploads")
            else None,
            jobs=JobStoreInfo.from_proto(message.jobs) if message.HasField("jobs") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return dataclasses.asdict(self)
