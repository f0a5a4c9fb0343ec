"""Structured logs: one JSON object a line, each carrying the id of the request it is about.

Log collectors parse JSON without rules, and a request id on every line (set once per call in
a context variable, so it follows the call into worker threads) lets an operator pull one
request's whole story out of interleaved concurrent calls. Python warnings (a decoder's about a
caller's odd metadata, say) go through the same handler, rate-limited: a request must not be
able to write raw lines, or millions of them, into the operator's log.
"""

from __future__ import annotations

import collections
import contextvars
import datetime
import json
import logging
import sys
import threading
import time
from typing import Any

__all__ = ["JsonFormatter", "RateLimit", "configure", "request_id"]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged too.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, request_id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.timezone.utc
            ).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", ""):
            entry["request_id"] = getattr(record, "request_id")  # noqa: B009  (set by a filter)
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RateLimit(logging.Filter):
    """Lets at most ``burst`` records through in any ``window`` seconds; the next record let
    through after some were dropped says how many (``suppressed``)."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        super().__init__()
        self._burst, self._window = burst, window
        self._passed: collections.deque[float] = collections.deque()
        self._dropped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._passed and now - self._passed[0] > self._window:
                self._passed.popleft()
            if len(self._passed) >= self._burst:
                self._dropped += 1
                return False
            self._passed.append(now)
            if self._dropped:
                record.suppressed = self._dropped
                self._dropped = 0
        return True


def configure(level: str, fmt: str) -> None:
    """Routes every log record of the process to stderr as JSON (``fmt="json"``) or text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    warnings_log = logging.getLogger("py.warnings")
    warnings_log.filters[:] = [RateLimit()]
