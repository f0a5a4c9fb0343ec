"""styleserve: the thin client of the styleserve style-transfer service (no torch).

``from styleserve import Client`` is all most callers need; the names below are the whole
public surface, so that everything a caller catches or matches on is importable from here.
"""

from importlib.metadata import PackageNotFoundError, version

from styleserve.aio import AsyncClient
from styleserve.client import Client
from styleserve.errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    StyleserveError,
    Unauthenticated,
    Unavailable,
)
from styleserve.events import (
    Event,
    Losses,
    Preview,
    Progress,
    Queued,
    Receipt,
    Result,
    Started,
    Timings,
)
from styleserve.info import ServerInfo, ServerLimits
from styleserve.options import PRESETS, OptionsError, StyleOptions

try:
    __version__ = version("styleserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS",
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "Event",
    "Internal",
    "InvalidArgument",
    "Losses",
    "OptionsError",
    "PermissionDenied",
    "Preview",
    "Progress",
    "Queued",
    "Receipt",
    "ResourceExhausted",
    "Result",
    "ServerInfo",
    "ServerLimits",
    "Started",
    "StyleOptions",
    "StyleserveError",
    "Timings",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
