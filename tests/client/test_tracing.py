"""The SDK's trace context in call metadata (``styleserve.tracing``): the current span's, as a
W3C traceparent; nothing outside a span; and nothing, without failing, where OpenTelemetry's
API is not installed (the client's install without the tracing extra). That the server joins
the trace is tests/server/test_tracing.py's."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from styleserve import Client, tracing


@pytest.fixture
def fresh_import() -> Iterator[None]:
    """The API looked up again, at the next call and after the test."""
    tracing._inject.cache_clear()
    yield
    tracing._inject.cache_clear()


def test_a_call_carries_the_current_span_as_a_traceparent():
    provider = TracerProvider()
    with provider.get_tracer(__name__).start_as_current_span("caller") as span:
        metadata = dict(tracing.trace_metadata())
    context = span.get_span_context()
    ids = f"{context.trace_id:032x}-{context.span_id:016x}"
    assert metadata["traceparent"] == f"00-{ids}-{context.trace_flags:02x}"


def test_outside_a_span_a_call_carries_nothing():
    assert tracing.trace_metadata() == ()


def test_without_opentelemetry_calls_carry_only_their_own_metadata(fresh_import, monkeypatch):
    for name in ("opentelemetry", "opentelemetry.propagate"):
        monkeypatch.setitem(sys.modules, name, None)  # None: the import fails
    provider = TracerProvider()
    with (
        provider.get_tracer(__name__).start_as_current_span("caller"),
        Client("127.0.0.1:9", token="t") as client,
    ):
        assert client._call_options(None)["metadata"] == (("authorization", "Bearer t"),)
