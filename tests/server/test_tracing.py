"""OpenTelemetry tracing through a real loopback server and the real SDK: the server's spans
join the trace of the caller's span (W3C trace context in the call's metadata), a job's phases
are spans under the call's, and a server without tracing records nothing.

Caller and server each have a provider of their own with an in-memory exporter, as two
processes would; neither is the global provider."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from styleserve import AsyncClient, Client, ResourceExhausted
from styleserve.plan import video_iterations
from styleserve_server.settings import Settings
from styleserve_server.tracing import _exporting

from tests.server.service_helpers import (
    FAST,
    connect,
    encoded,
    picture,
    start_endless,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

_STYLE_TRANSFER = "/styleserve.v1.StyleTransferService/StyleTransfer"
_JOB = {**FAST, "precision": "float32"}


class Recorder:
    """A provider whose ended spans an in-memory exporter keeps."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> ReadableSpan:
        """The one span called ``name``, once it has ended (a call's span ends after its last
        message leaves, which the caller may read first)."""
        wait_until(lambda: any(span.name == name for span in self.spans()), timeout=30)
        (span,) = (span for span in self.spans() if span.name == name)
        return span


@pytest.fixture
def server_spans() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.provider.shutdown()


@pytest.fixture
def caller() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.provider.shutdown()


def _calls(recorder: Recorder) -> list[ReadableSpan]:
    return [span for span in recorder.spans() if span.name == _STYLE_TRANSFER]


def _children(recorder: Recorder, parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {
        span.name: span
        for span in recorder.spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


def _assert_child_of(span: ReadableSpan, parent: trace.Span) -> None:
    assert span.parent is not None, f"{span.name} has no parent: the trace context was lost"
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.parent.is_remote


def _assert_in_order(spans: list[ReadableSpan]) -> None:
    for before, after in itertools.pairwise(spans):
        assert before.end_time is not None and after.start_time is not None
        assert before.end_time <= after.start_time, f"{before.name} overlaps {after.name}"


@contextlib.contextmanager
def _traced(
    start_server, server_spans: Recorder, caller: Recorder, **settings: Any
) -> Iterator[tuple[Client, trace.Span]]:
    """A client of a server (``settings``) that traces into ``server_spans``, and the caller's
    span, current inside."""
    tracer = caller.provider.get_tracer(__name__)
    with (
        start_server(tracer_provider=server_spans.provider, **settings) as srv,
        Client(srv.target) as client,
        tracer.start_as_current_span("caller") as span,
    ):
        yield client, span


@pytest.mark.parametrize(
    ("options", "tier", "work"),
    [
        (_JOB, "optimisation", "styleserve.optimise"),
        ({"preset": "instant", "size": 40}, "instant", "styleserve.feed_forward"),
    ],
)
def test_a_jobs_spans_are_children_of_the_callers_span(
    start_server, server_spans, caller, options, tier, work
):
    with _traced(start_server, server_spans, caller) as (client, span):
        result = client.stylize(encoded(), encoded(picture((40, 40))), **options)
    call = server_spans.named(_STYLE_TRANSFER)
    assert call.kind is trace.SpanKind.SERVER
    _assert_child_of(call, span)
    assert call.attributes is not None
    assert call.attributes["styleserve.request_id"] == result.receipt.request_id
    assert call.attributes["styleserve.tier"] == tier
    assert call.attributes["styleserve.iterations"] == result.iterations
    assert call.attributes["styleserve.width"] == result.width
    phases = _children(server_spans, call)
    names = ["styleserve.queue", "styleserve.setup", work, "styleserve.encode"]
    assert sorted(phases) == sorted(names)
    _assert_in_order([phases[name] for name in names])
    assert all(phases[name].context.trace_id == span.get_span_context().trace_id for name in names)


def test_a_videos_spans_are_a_queue_a_setup_and_one_a_frame(start_server, server_spans, caller):
    frames = [encoded(picture((48 + i, 32)).resize((48, 32))) for i in range(3)]
    with _traced(start_server, server_spans, caller) as (client, span):
        events = list(client.stylize_video(frames, encoded(picture((40, 40))), fps=10, **_JOB))
    call = server_spans.named("/styleserve.v1.StyleTransferService/StylizeVideo")
    _assert_child_of(call, span)
    assert call.attributes is not None
    assert call.attributes["styleserve.frames"] == 3
    assert call.attributes["styleserve.tier"] == "optimisation"
    (chunk,) = events[-1].chunks
    assert call.attributes["styleserve.iterations"] == video_iterations((48, 32), chunk.options, 3)
    phases = sorted(
        (s for s in server_spans.spans() if s.parent and s.parent.span_id == call.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    names = [s.name for s in phases]
    assert names == ["styleserve.queue", "styleserve.setup", *["styleserve.frame"] * 3], names
    assert [s.attributes and s.attributes.get("styleserve.frame") for s in phases[2:]] == [0, 1, 2]
    _assert_in_order(phases)


def test_a_registrations_spans_are_a_queue_and_its_preparation(start_server, server_spans, caller):
    with _traced(start_server, server_spans, caller) as (client, span):
        client.register_style([encoded(picture((40, 40))), encoded()], **_JOB)
    call = server_spans.named("/styleserve.v1.StyleTransferService/RegisterStyle")
    _assert_child_of(call, span)
    assert call.attributes is not None
    assert call.attributes["styleserve.pictures"] == 2
    assert call.attributes["styleserve.size"] == _JOB["size"]
    phases = _children(server_spans, call)
    names = ["styleserve.queue", "styleserve.prepare"]
    assert sorted(phases) == sorted(names)
    _assert_in_order([phases[name] for name in names])


def test_a_batch_carries_the_trace_into_its_worker_threads(start_server, server_spans, caller):
    contents = [encoded(picture((48 + i, 32))) for i in range(3)]
    with _traced(start_server, server_spans, caller, feed_forward_slots=2) as (client, span):
        outcomes = list(client.stylize_many(contents, encoded(), preset="instant", size=40))
    assert all(outcome.ok for outcome in outcomes)
    wait_until(lambda: len(_calls(server_spans)) == len(contents), timeout=30)
    for call in _calls(server_spans):
        _assert_child_of(call, span)


async def test_the_asyncio_client_carries_the_trace_too(start_server, server_spans, caller):
    tracer = caller.provider.get_tracer(__name__)
    with start_server(tracer_provider=server_spans.provider) as srv:
        async with AsyncClient(srv.target) as client:
            with tracer.start_as_current_span("caller") as span:
                await client.info(timeout=30)
    _assert_child_of(server_spans.named("/styleserve.v1.StyleTransferService/GetServerInfo"), span)


def test_a_job_the_full_queue_refuses_fails_its_queue_span(start_server, server_spans):
    with (
        start_server(job_slots=1, queue_size=0, tracer_provider=server_spans.provider) as srv,
        connect(srv.target) as stub,
        Client(srv.target, retries=0) as client,
    ):
        running = start_endless(stub)
        with pytest.raises(ResourceExhausted):
            client.stylize(encoded(), encoded(), **_JOB)
        running.cancel()
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    (call,) = (
        span
        for span in _calls(server_spans)
        if span.attributes is not None and span.attributes["rpc.grpc.status_code"] == exhausted
    )
    # No caller span: a trace of the server's own.
    assert call.parent is None
    queue = _children(server_spans, call)["styleserve.queue"]
    assert queue.status.status_code is trace.StatusCode.ERROR


def test_without_tracing_the_server_records_nothing(start_server, caller, monkeypatch):
    # The caller's provider stands in for the global one too: a server that traced through
    # OpenTelemetry's global API, though off, would record there.
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: caller.provider)
    tracer = caller.provider.get_tracer(__name__)
    with (
        start_server() as srv,
        Client(srv.target) as client,
        tracer.start_as_current_span("caller"),
    ):
        client.stylize(encoded(), encoded(picture((40, 40))), **_JOB)
        client.stylize(encoded(), encoded(picture((40, 40))), preset="instant", size=40)
    assert [span.name for span in caller.spans()] == ["caller"]


def test_a_collector_is_named_by_its_url():
    assert Settings(tracing_endpoint="http://otel-collector:4317").tracing_endpoint
    with pytest.raises(ValidationError, match="not a collector address"):
        Settings(tracing_endpoint="otel-collector:4317")


@pytest.mark.parametrize("environment", [None, "edge-styleserve"])
def test_the_exported_spans_name_the_service(monkeypatch, environment):
    if environment is None:
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    else:
        monkeypatch.setenv("OTEL_SERVICE_NAME", environment)
    provider = _exporting("http://127.0.0.1:9")
    try:
        assert provider.resource.attributes[SERVICE_NAME] == (environment or "styleserve")
    finally:
        provider.shutdown()
