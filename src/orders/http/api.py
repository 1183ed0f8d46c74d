"""The Orders HTTP API: commands, queries from the read model, health, readiness and metrics.

Build it with :func:`create_api` around an :class:`~orders.app.OrdersApp` (the composition
root's product); :mod:`orders.http.server` runs it under uvicorn.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from orders.app import OrdersApp
from orders.http import admin, commands, operations, queries, streams
from orders.http.access import RequestLog
from orders.http.jsonbody import BodyLimit
from orders.http.lean import LeanRoutes
from orders.http.methods import HeadAsGet
from orders.http.metrics import Metrics
from orders.http.pages import install_pages
from orders.http.problems import install
from orders.http.service import Service
from orders.http.sse import StreamMetrics, Streams, StreamSettings
from orders.http.tracing import TraceRequests

__all__ = [
    "create_api",
]


def _openapi(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with ``null`` dropped from the schemas of parameters.

    An optional header or query parameter is expressed by its absence; FastAPI's
    ``anyOf: [..., {type: null}]`` would tell clients (and fuzzers) to send the text "null".
    """
    if api.openapi_schema is None:
        schema = FastAPI.openapi(api)
        for path in schema["paths"].values():
            for operation in path.values():
                for parameter in operation.get("parameters", ()):
                    options = parameter["schema"].pop("anyOf", None)
                    if options is not None:
                        (kept,) = [o for o in options if o.get("type") != "null"]
                        parameter["schema"].update(kept)
    assert api.openapi_schema is not None
    return api.openapi_schema


def create_api(
    orders_app: OrdersApp,
    *,
    projections_in_process: bool = True,
    stream_settings: StreamSettings | None = None,
) -> FastAPI:
    """The FastAPI application serving ``orders_app``.

    It neither starts nor stops ``orders_app`` (nor its projections): its owner does, see
    :func:`orders.http.server.serve`. ``projections_in_process`` tells readiness whether the
    projections are expected to run in this process or in a separate ``orders project`` worker;
    ``stream_settings`` how the live routes write (heartbeats, batching, buffers).
    """
    api = FastAPI(
        title="Orders",
        version="1.0.0",
        description="The Orders service: CQRS + event sourcing on cqrskit. "
        "See docs/http.md for consistency tokens, idempotency and errors.",
        docs_url=None,  # served by orders.http.pages, with the assets shipped in the package
        redoc_url=None,
    )
    service = Service(
        orders_app,
        Metrics(orders_app),
        projections_in_process,
        Streams(stream_settings or StreamSettings()),
    )
    api.state.service = service
    service.metrics.registry.register(StreamMetrics(service.streams))
    # The live routes first: /live/orders must not be taken for an order called "live".
    for routes in (streams, commands, queries, operations, admin):
        api.include_router(routes.router)
    install_pages(api)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    install(api)
    api.add_middleware(HeadAsGet)
    api.add_middleware(LeanRoutes, api=api)
    api.add_middleware(BodyLimit)
    api.add_middleware(RequestLog, metrics=service.metrics)
    api.add_middleware(TraceRequests)
    return api
