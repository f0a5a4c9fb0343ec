"""styleserve: the thin client of the styleserve style-transfer service (no torch).

``from styleserve import Client`` is all most callers need; the names below are the whole
public surface, so that everything a caller catches or matches on is importable from here.
"""

import importlib.metadata as _metadata

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
