"""Traces with OpenTelemetry: one trace from a command through its append, the relay and every
projection that applies its events.

The trace context travels with the events: :class:`~cqrskit.CommandHandler` stores the W3C
``traceparent`` (and ``tracestate``) of the append in each event's metadata (``extra``), the
relay puts the context of its publish in the NATS headers, and a projection runner records one
span per traced event it applied, as a child of the context the event carries.

Everything here is a no-op unless a tracer provider is in use: :func:`configure_tracing` sets
one up that exports over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and tests pass their own to
:func:`use_tracer_provider` (an in-memory exporter). OpenTelemetry is an optional dependency
(the ``cqrskit[tracing]`` extra); without it every function here does nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cqrskit.errors import ConfigurationError
from cqrskit.messages import Metadata

try:
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `tracing` extra is not installed: tracing is off
    otel_trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]

__all__ = [
    "TRACE_KEYS",
    "OpenSpans",
    "configure_tracing",
    "enabled",
    "open_spans",
    "record_spans",
    "span",
    "trace_context",
    "trace_context_of",
    "use_tracer_provider",
    "with_trace_context",
]

#: the metadata ``extra`` keys (and NATS headers) that carry the W3C trace context
TRACE_KEYS = ("traceparent", "tracestate")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_TRACER_NAME = "cqrskit"

# The provider cqrskit records with: None means tracing is off (the common case, which then
# costs one comparison per call).
_provider: Any = None
_propagator: Any = None if otel_trace is None else TraceContextTextMapPropagator()


def configure_tracing(
    service_name: str, env: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[None]:
    """Export traces over OTLP/HTTP when the environment names an endpoint; else trace nothing.

    Use as ``with configure_tracing("orders"):`` around the process's work: leaving the block
    flushes the spans not yet exported. Honours the standard ``OTEL_*`` variables (endpoint,
    headers, ``OTEL_SERVICE_NAME``, which overrides ``service_name``). Raises
    :class:`ConfigurationError` when an endpoint is set but the ``tracing`` extra is missing.
    """
    env = os.environ if env is None else env
    if not any(env.get(name) for name in _ENDPOINT_VARIABLES):
        return contextlib.nullcontext()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise ConfigurationError(
            "an OTLP endpoint is configured but OpenTelemetry is not installed: "
            "pip install 'cqrskit[tracing]'"
        ) from error
    name = env.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return _using(provider)


@contextlib.contextmanager
def _using(provider: Any) -> Iterator[None]:
    with use_tracer_provider(provider):
        try:
            yield
        finally:
            provider.shutdown()


@contextlib.contextmanager
def use_tracer_provider(provider: Any) -> Iterator[None]:
    """Record cqrskit's spans with ``provider`` (an OpenTelemetry ``TracerProvider``) inside the
    block (tests: a provider with an in-memory exporter)."""
    global _provider
    previous, _provider = _provider, provider
    try:
        yield
    finally:
        _provider = previous


def enabled() -> bool:
    """Whether spans are being recorded."""
    return _provider is not None


def _tracer() -> Any:
    return _provider.get_tracer(_TRACER_NAME)


def _kind(kind: str) -> Any:
    return getattr(otel_trace.SpanKind, kind.upper())


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: Mapping[str, str] | None = None,
    kind: str = "internal",
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[None]:
    """A span around the block: a child of ``parent`` (a W3C trace context) if given, else of
    the current span. ``kind`` is ``internal``, ``server``, ``client``, ``producer`` or
    ``consumer``. Does nothing when tracing is off."""
    if _provider is None:
        yield
        return
    context = _propagator.extract(parent) if parent is not None else None
    with _tracer().start_as_current_span(
        name, context=context, kind=_kind(kind), attributes=dict(attributes or {})
    ):
        yield


def trace_context() -> dict[str, str]:
    """The W3C trace context of the current span (empty when there is none)."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        _propagator.inject(carrier)
    return carrier


def trace_context_of(metadata: Metadata) -> dict[str, str]:
    """The W3C trace context stored in an event's metadata (empty when none)."""
    extra = metadata.extra
    return {key: extra[key] for key in TRACE_KEYS if key in extra}


def with_trace_context(metadata: Metadata | None) -> Metadata | None:
    """``metadata`` with the current span's trace context added (unchanged when none)."""
    carrier = trace_context()
    if not carrier:
        return metadata
    if metadata is None:
        return Metadata(extra=carrier)
    return Metadata(
        correlation_id=metadata.correlation_id,
        causation_id=metadata.causation_id,
        extra={**metadata.extra, **carrier},
    )


def record_spans(
    name: str,
    parents: Sequence[Mapping[str, str]],
    started_ns: int,
    *,
    kind: str = "consumer",
    attributes: Mapping[str, str | int] | None = None,
) -> None:
    """One finished span per parent context (e.g. one per traced event of a projection batch),
    from ``started_ns`` (``time.time_ns()``) to now. Does nothing when tracing is off."""
    if _provider is None or not parents:
        return
    tracer, ended = _tracer(), time.time_ns()
    for parent in parents:
        recorded = tracer.start_span(
            name,
            context=_propagator.extract(parent),
            kind=_kind(kind),
            attributes=dict(attributes or {}),
            start_time=started_ns,
        )
        recorded.end(end_time=ended)


class OpenSpans:
    """Spans started together (one per parent context) and ended together: their own
    contexts go downstream (e.g. in NATS headers) before they end."""

    def __init__(self, spans: list[Any], contexts: list[dict[str, str]]) -> None:
        self._spans = spans
        #: per parent, the context to pass on: the new span's, or the parent's when tracing is off
        self.contexts = contexts

    def end(self, error: BaseException | None = None) -> None:
        """End every span (marked as failed with ``error``)."""
        for started in self._spans:
            if error is not None:
                started.record_exception(error)
                started.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, str(error)))
            started.end()


def open_spans(
    name: str,
    parents: Sequence[Mapping[str, str]],
    *,
    kind: str = "producer",
    attributes: Sequence[Mapping[str, str | int]] | None = None,
) -> OpenSpans:
    """Start one span per non-empty parent context (``attributes``: one mapping per parent);
    an untraced parent (empty) gets no span. With tracing off nothing is started, and each
    parent's context is passed on unchanged."""
    if _provider is None:
        return OpenSpans([], [dict(parent) for parent in parents])
    tracer = _tracer()
    spans: list[Any] = []
    contexts: list[dict[str, str]] = []
    for index, parent in enumerate(parents):
        if not parent:
            contexts.append({})
            continue
        started = tracer.start_span(
            name,
            context=_propagator.extract(parent),
            kind=_kind(kind),
            attributes=dict(attributes[index]) if attributes else {},
        )
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=otel_trace.set_span_in_context(started))
        spans.append(started)
        contexts.append(carrier)
    return OpenSpans(spans, contexts)
