"""styleserve: the thin client of the styleserve style-transfer service (no torch).

``from styleserve import Client`` is all most callers need; the names below are the whole
public surface, so that everything a caller catches or matches on is importable from here.

Each name is imported when first used (PEP 562), not with the package: the server's engine
imports ``styleserve.options`` and ``styleserve.plan``, pure Python, and a package that loaded
the client with them would put grpc and protobuf under an engine that has no gRPC in it.
"""

from __future__ import annotations

import importlib as _importlib
import importlib.metadata as _metadata
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

# Three lists of one surface, as pydantic keeps its own: the imports type checkers and the docs
# read, the module of each name for __getattr__, and __all__; tests/client/test_client_package.py
# holds them equal.
if _TYPE_CHECKING:
    from styleserve.aio import AsyncClient
    from styleserve.batch import Outcome
    from styleserve.client import Client
    from styleserve.errors import (
        Cancelled,
        DataLoss,
        DeadlineExceeded,
        FailedPrecondition,
        Internal,
        InvalidArgument,
        NotFound,
        OutOfRange,
        PermissionDenied,
        ResourceExhausted,
        StyleserveError,
        Unauthenticated,
        Unavailable,
        VideoError,
    )
    from styleserve.events import (
        Event,
        FeedForwardInfo,
        Losses,
        PrecisionChoice,
        PrecisionTrial,
        Preview,
        Progress,
        Queued,
        Receipt,
        Result,
        Started,
        Timings,
    )
    from styleserve.info import ServerInfo, ServerLimits
    from styleserve.jobs import JobStatus
    from styleserve.options import PRESETS, JobOptions, OptionsError, StyleOptions
    from styleserve.pictures import UploadedPicture
    from styleserve.regions import Regions
    from styleserve.video_jobs import ChunkResult, StylizedFrame, VideoProgress, VideoResult

_SOURCES = {
    "AsyncClient": "styleserve.aio",
    "Cancelled": "styleserve.errors",
    "ChunkResult": "styleserve.video_jobs",
    "Client": "styleserve.client",
    "DataLoss": "styleserve.errors",
    "DeadlineExceeded": "styleserve.errors",
    "Event": "styleserve.events",
    "FailedPrecondition": "styleserve.errors",
    "FeedForwardInfo": "styleserve.events",
    "Internal": "styleserve.errors",
    "InvalidArgument": "styleserve.errors",
    "JobOptions": "styleserve.options",
    "JobStatus": "styleserve.jobs",
    "Losses": "styleserve.events",
    "NotFound": "styleserve.errors",
    "OptionsError": "styleserve.options",
    "OutOfRange": "styleserve.errors",
    "Outcome": "styleserve.batch",
    "PRESETS": "styleserve.options",
    "PermissionDenied": "styleserve.errors",
    "PrecisionChoice": "styleserve.events",
    "PrecisionTrial": "styleserve.events",
    "Preview": "styleserve.events",
    "Progress": "styleserve.events",
    "Queued": "styleserve.events",
    "Receipt": "styleserve.events",
    "Regions": "styleserve.regions",
    "ResourceExhausted": "styleserve.errors",
    "Result": "styleserve.events",
    "ServerInfo": "styleserve.info",
    "ServerLimits": "styleserve.info",
    "Started": "styleserve.events",
    "StyleOptions": "styleserve.options",
    "StyleserveError": "styleserve.errors",
    "StylizedFrame": "styleserve.video_jobs",
    "Timings": "styleserve.events",
    "Unauthenticated": "styleserve.errors",
    "Unavailable": "styleserve.errors",
    "UploadedPicture": "styleserve.pictures",
    "VideoError": "styleserve.errors",
    "VideoProgress": "styleserve.video_jobs",
    "VideoResult": "styleserve.video_jobs",
}

try:
    __version__ = _metadata.version("styleserve")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS",
    "AsyncClient",
    "Cancelled",
    "ChunkResult",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "Event",
    "FailedPrecondition",
    "FeedForwardInfo",
    "Internal",
    "InvalidArgument",
    "JobOptions",
    "JobStatus",
    "Losses",
    "NotFound",
    "OutOfRange",
    "OptionsError",
    "Outcome",
    "PermissionDenied",
    "PrecisionChoice",
    "PrecisionTrial",
    "Preview",
    "Progress",
    "Queued",
    "Receipt",
    "Regions",
    "ResourceExhausted",
    "Result",
    "ServerInfo",
    "ServerLimits",
    "Started",
    "StyleOptions",
    "StyleserveError",
    "StylizedFrame",
    "Timings",
    "Unauthenticated",
    "Unavailable",
    "UploadedPicture",
    "VideoError",
    "VideoProgress",
    "VideoResult",
    "__version__",
]


def __getattr__(name: str) -> _Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'styleserve' has no attribute {name!r}")
    value = getattr(_importlib.import_module(source), name)
    globals()[name] = value  # later uses find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
