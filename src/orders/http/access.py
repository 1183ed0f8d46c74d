"""One structured log line per request, and the JSON log format.

Routes add what they know (order id, command, outcome) to ``scope["orders.log"]``; the
middleware adds method, path, status and latency and logs one record on the ``orders.http.access``
logger with those fields as ``record.http`` (:class:`orders.logs.JsonFormatter` prints them).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.http.metrics import Metrics

__all__ = ["RequestLog"]

access_log = logging.getLogger("orders.http.access")


class RequestLog:
    """ASGI middleware: time each HTTP request, log it, and count it in the metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # prometheus_client's labels() checks and locks on every call; a child per
        # (method, route, status) is looked up once
        self._histograms: dict[tuple[str, str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields: dict[str, Any] = {}
        scope["orders.log"] = fields
        status = 500  # what the client sees if the app fails before it starts a response
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "<unmatched>")
            order_id = scope.get("path_params", {}).get("order_id")
            if order_id is not None:
                fields.setdefault("order_id", order_id)
            labels = (scope["method"], route, str(status))
            histogram = self._histograms.get(labels)
            if histogram is None:
                histogram = self._histograms[labels] = self.metrics.requests.labels(*labels)
            histogram.observe(elapsed)
            record = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                **fields,
                "latency_ms": round(elapsed * 1000, 3),
            }
            if access_log.isEnabledFor(logging.INFO):
                # Logger.info() without looking up the caller's frame (always this line)
                line = access_log.makeRecord(
                    access_log.name, logging.INFO, __file__, 0, "request", (), None,
                    extra={"http": record},
                )  # fmt: skip
                access_log.handle(line)
