"""One trace from the HTTP command through the append, the relay and every projection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cqrskit import EventCodec, ProjectionRunner, tracing
from cqrskit.memory import InMemoryReadStore
from cqrskit.nats import JetStreamLog, JetStreamSource, Relay
from orders.app import OrdersApp
from orders.domain import EVENT_TYPES
from orders.http.api import create_api
from orders.projections import PROJECTIONS

PEN = {"name": "Pen", "price": "2.00", "quantity": 1}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracing.use_tracer_provider(provider):
        yield memory


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _parent_of(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    (parent,) = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


async def test_a_command_is_one_trace_from_http_to_every_projection(
    orders_app: OrdersApp, jetstream: JetStreamLog, exporter: InMemorySpanExporter
) -> None:
    api = create_api(orders_app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://orders"
    ) as client:
        created = await client.post("/orders", json={"customer_id": "C-t", "items": [PEN]})
    assert created.status_code == 201
    await Relay(orders_app.backend.events, orders_app.backend.read, jetstream).catch_up()
    await orders_app.catch_up()  # the projections that read the event store
    node = InMemoryReadStore()  # and a node's, that read JetStream
    for projection in PROJECTIONS:
        source = JetStreamSource(
            jetstream, orders_app.backend.events, consumer=f"t_{projection.name}"
        )
        runner = ProjectionRunner(projection, source, node, EventCodec(EVENT_TYPES))
        await runner.setup()
        await runner.catch_up()

    spans = exporter.get_finished_spans()

    (server,) = _by_name(spans, "POST /orders")
    assert {span.context.trace_id for span in spans} == {server.context.trace_id}
    (append,) = _by_name(spans, "append")
    assert append.attributes == {"cqrskit.stream_id": f"order-{created.json()['order_id']}"}
    assert _parent_of(_parent_of(append, spans), spans) is server  # server > command > append
    (relay,) = _by_name(spans, f"relay {jetstream.stream}")
    assert _parent_of(relay, spans) is append
    for name in ("project orders", "project order_stats"):
        parents = sorted(_parent_of(span, spans).name for span in _by_name(spans, name))
        assert parents == sorted(["append", relay.name])  # from the store, and from JetStream


async def test_without_a_tracer_provider_nothing_is_traced(orders_app: OrdersApp) -> None:
    api = create_api(orders_app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://orders"
    ) as client:
        created = await client.post("/orders", json={"customer_id": "C-n", "items": [PEN]})
    assert created.status_code == 201

    (event,) = await orders_app.events(0, 10)

    assert not tracing.enabled()
    assert tracing.trace_context_of(event.meta) == {}


class _Collector(BaseHTTPRequestHandler):
    received: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_spans_are_exported_over_otlp_when_an_endpoint_is_configured() -> None:
    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        with tracing.configure_tracing("test", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}):
            assert tracing.enabled()
            with tracing.span("work"):
                pass
        # leaving the block flushed the batch to the collector
        assert _Collector.received == ["/v1/traces"]
        assert not tracing.enabled()
    finally:
        collector.shutdown()
        collector.server_close()


def test_no_endpoint_means_no_tracing() -> None:
    with tracing.configure_tracing("test", {}):
        assert not tracing.enabled()
