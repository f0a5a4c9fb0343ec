"""OpenTelemetry tracing of the server, off unless ``tracing_endpoint`` names a collector.

Each call gets a server span from opentelemetry-instrumentation-grpc's interceptor, the child
of the caller's span when the call's metadata carries its W3C trace context (``traceparent``:
the SDK sends it when OpenTelemetry's API is installed). Under it a StyleTransfer job's phases
get spans of their own: ``styleserve.queue`` (waiting for a slot), ``styleserve.setup`` (decoding
the pictures, the feed-forward start, the style's targets: until the engine reports its first
iteration), ``styleserve.optimise`` (the iterations) or, on the instant tier,
``styleserve.feed_forward`` (the network's one pass), and ``styleserve.encode`` (the result's
picture). The call's span carries the job's request id, job id, tier, size and iterations.
A StylizeVideo call's phases are ``styleserve.queue``, ``styleserve.setup`` (the style
pictures' decoding) and one ``styleserve.frame`` per frame (its index in ``styleserve.frame``:
its decoding, stylisation and encoding), and its span carries the frames too; a RegisterStyle
call's are ``styleserve.queue`` and ``styleserve.prepare`` (the targets), and its span carries
its request id, pictures and size.
Off, ``Tracing`` opens no span and installs no interceptor: no OpenTelemetry code runs in a
call.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

# No type information ships with the instrumentation; the private module holds the aio
# interceptor's class, which ``_Interceptor`` mends.
from opentelemetry.instrumentation.grpc import filters  # type: ignore[import-untyped]
from opentelemetry.instrumentation.grpc._aio_server import (  # type: ignore[import-untyped]
    OpenTelemetryAioServerInterceptor,
)
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.util.types import AttributeValue

from styleserve_server.inputs import CheckedRequest, CheckedStyle
from styleserve_server.server_info import version

__all__ = ["Phases", "Tracing"]

# The service name traces carry unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one.
_SERVICE = "styleserve"
_PREFIX = "styleserve."
_T = TypeVar("_T")


class _Interceptor(OpenTelemetryAioServerInterceptor):
    """The instrumentation's aio interceptor, mended twice. It takes every response-streaming
    method for an async generator: a coroutine that writes its responses (``context.write``,
    as StyleTransfer does) gets the wrapper of a unary method instead, which awaits it inside
    the call's span (opentelemetry-python-contrib issue 3066). And that wrapper keeps the
    request in its frame while it awaits the method: a refused call's exception, which gRPC
    keeps, reaches that frame again, so every refused request's bytes would stay until the
    garbage collector ran (the service drops its own references for this reason). The
    request goes in a box the method empties."""

    def _intercept_aio_server_unary(
        self, behavior: Callable[..., Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Callable[..., Any]:
        traced = super()._intercept_aio_server_unary(
            lambda box, context: behavior(box.pop(), context), handler_call_details
        )

        async def unboxed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            box = [request]
            del request
            return await traced(box, context)

        return unboxed

    def _intercept_aio_server_stream(
        self, behavior: Callable[..., Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behavior):
            return self._intercept_aio_server_unary(behavior, handler_call_details)
        return super()._intercept_aio_server_stream(behavior, handler_call_details)


def _exporting(endpoint: str) -> TracerProvider:
    """A provider sending its spans in batches to the OTLP/gRPC collector at ``endpoint``; the
    exporter's OTEL_EXPORTER_OTLP_* variables (certificates, headers) apply."""
    # The environment's service name, where it sets one, over the server's own, as the SDK
    # ranks them.
    resource = Resource.create({SERVICE_NAME: _SERVICE}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


class Phases:
    """Spans of the consecutive phases of one piece of work in one thread, each the child of
    the span current where it starts: entering a phase ends the one before, ``end`` the last
    (failed with ``error`` when one ended the work)."""

    def __init__(self, tracer: trace.Tracer | None) -> None:
        self._tracer = tracer
        self._phase: tuple[str, int | None] = ("", None)
        self._span: trace.Span | None = None

    def enter(self, phase: str, index: int | None = None) -> None:
        """Starts ``phase`` (``styleserve.<phase>``) unless it is the current one; phases
        with an ``index`` (a video's frames) are one each, the index their attribute."""
        if self._tracer is None or (phase, index) == self._phase:
            return
        self.end()
        self._phase = (phase, index)
        attributes = None if index is None else {_PREFIX + phase: index}
        self._span = self._tracer.start_span(_PREFIX + phase, attributes=attributes)

    def end(self, error: BaseException | None = None) -> None:
        if self._span is None:
            return
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(trace.StatusCode.ERROR, type(error).__name__)
        self._span.end()
        self._span = None


class Tracing:
    """The server's tracing: the interceptor that opens each call's span, the spans of a job's
    phases under it, and the export of the last spans when the server stops; or, made with no
    provider, none of these."""

    def __init__(
        self, provider: trace.TracerProvider | None = None, *, own: TracerProvider | None = None
    ) -> None:
        """``own``: a provider of the server's own, instead of ``provider``, which ``shutdown``
        shuts down (flushes)."""
        self._own = own
        provider = own or provider
        self._tracer = None if provider is None else provider.get_tracer(__name__, version())

    @classmethod
    def configure(
        cls, endpoint: str | None, provider: trace.TracerProvider | None = None
    ) -> Tracing:
        """Tracing into ``provider`` (the caller's: tests pass an in-memory exporter's), else
        to the collector at ``endpoint``, else off."""
        if provider is not None:
            return cls(provider)
        if endpoint is None:
            return cls()
        return cls(own=_exporting(endpoint))

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The server interceptor that opens each call's span (none when off); health checks,
        which probes send every few seconds, are left out."""
        if self._tracer is None:
            return []
        return [_Interceptor(self._tracer, filter_=filters.negate(filters.health_check()))]

    def span(self, phase: str) -> contextlib.AbstractContextManager[object]:
        """A span of ``phase`` (``styleserve.<phase>``), current inside, the child of the one
        current here; failed by an error that leaves it."""
        if self._tracer is None:
            return contextlib.nullcontext()
        return self._tracer.start_as_current_span(_PREFIX + phase)

    def traced(self, phase: str, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)`` in a span of ``phase`` (``span``): for a worker thread's work,
        which runs in the context of the call that started it."""
        with self.span(phase):
            return work(*args)

    def phases(self) -> Phases:
        return Phases(self._tracer)

    def describe(
        self,
        request_id: str,
        checked: CheckedRequest,
        job_id: str,
        *,
        frames: int = 0,
        iterations: int | None = None,
    ) -> None:
        """Sets what tells a StyleTransfer job (or a video's, ``frames`` > 0, whose
        ``iterations`` are all its frames') apart on the current span (the call's);
        ``job_id``: a detachable job's, else empty."""
        output = checked.stages[-1]
        instant = checked.options.method == "feed_forward"
        attributes: dict[str, AttributeValue] = {
            "request_id": request_id,
            "job_id": job_id,
            "tier": "instant" if instant else "optimisation",
            "width": output.width,
            "height": output.height,
            "iterations": checked.total_iterations if iterations is None else iterations,
        }
        if frames:
            attributes["frames"] = frames
        self._annotate(attributes)

    def describe_registration(self, request_id: str, checked: CheckedStyle) -> None:
        """Sets what tells a RegisterStyle call apart on the current span (the call's)."""
        size = checked.options.size
        self._annotate({"request_id": request_id, "pictures": len(checked.pictures), "size": size})

    def _annotate(self, attributes: dict[str, AttributeValue]) -> None:
        if self._tracer is None:
            return
        span = trace.get_current_span()
        span.set_attributes({_PREFIX + name: value for name, value in attributes.items()})

    def shutdown(self) -> None:
        """Sends the spans still batched (blocks up to the exporter's timeout)."""
        if self._own is not None:
            self._own.shutdown()
