"""Carries the caller's OpenTelemetry trace context with every call, so that the server's spans
join the caller's trace (as children of the span current when the call is made).

Only where OpenTelemetry's API is installed (``pip install styleserve[tracing]``, or an
application that traces already); elsewhere calls carry nothing more. The API's propagators
decide what is sent: the W3C ``traceparent`` (and ``baggage``) by default, nothing outside a
span. The API is imported at the first call, not with the client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

__all__ = ["trace_metadata"]


@functools.cache
def _inject() -> Callable[[dict[str, str]], None] | None:
    try:
        from opentelemetry.propagate import inject
    except ImportError:  # installed without the tracing extra: there is no trace to carry
        return None
    return inject


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The call metadata that carries the current trace context (none without one)."""
    inject = _inject()
    if inject is None:
        return ()
    carrier: dict[str, str] = {}
    inject(carrier)
    return tuple(carrier.items())
