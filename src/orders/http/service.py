"""What the route modules share: the service object, common parameters, documented problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request

from orders.app import OrdersApp
from orders.http import models
from orders.http.frames import FrameCache
from orders.http.metrics import Metrics
from orders.http.problems import PROBLEM_JSON
from orders.http.sse import Streams, StreamSettings

__all__ = [
    "COMMAND_ERRORS",
    "QUERY_ERRORS",
    "TOKEN_HEADER",
    "ConsistencyToken",
    "IdempotencyKey",
    "OrderIdPath",
    "Service",
    "ServiceDep",
    "log_order",
    "problem_responses",
    "service_of",
]


@dataclass(frozen=True)
class Service:
    """What the routes need: the application, its metrics, where the projections run, and the
    open event streams."""

    app: OrdersApp
    metrics: Metrics
    projections_in_process: bool
    streams: Streams = field(default_factory=lambda: Streams(StreamSettings()))
    #: the events' SSE frames, encoded once for every client (named by type, and "log")
    frame_cache: FrameCache = field(init=False)
    log_frame_cache: FrameCache = field(init=False)

    def __post_init__(self) -> None:
        read_current = self.app.read_current
        object.__setattr__(self, "frame_cache", FrameCache(read_current))
        object.__setattr__(self, "log_frame_cache", FrameCache(read_current, event_name="log"))


async def service_of(request: Request) -> Service:
    """The :class:`Service` of the app handling ``request``.

    ``async`` so that FastAPI calls it on the event loop: a plain function would cost every
    request a hop to a worker thread.
    """
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a request safely: the same key returns the first response",
    ),
]
ConsistencyToken = Annotated[
    str | None,
    Header(
        alias="Consistency-Token",
        pattern=r"^[0-9]{1,30}$",
        description="a command's consistency token: wait until the read model includes it",
    ),
]
# Lenient (orders made by the CLI may have other ids than the API makes), but never blank and
# never with control characters.
OrderIdPath = Annotated[str, Path(max_length=models.MAX_TEXT, pattern=models.TEXT_PATTERN)]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: a problem+json document for each of ``statuses``."""
    schema = models.ProblemOut.model_json_schema()
    return {
        status: {"description": "problem", "content": {PROBLEM_JSON: {"schema": schema}}}
        for status in statuses
    }


TOKEN_HEADER = {
    "Consistency-Token": {
        "description": "the write's consistency token",
        "schema": {"type": "string"},
    }
}
COMMAND_ERRORS = problem_responses(404, 409, 413, 422, 503)
QUERY_ERRORS = problem_responses(422, 503, 504)


def log_order(request: Request, order_id: str) -> None:
    """Name the order in this request's log line."""
    request.scope.setdefault("orders.log", {})["order_id"] = order_id
