"""A server span for every HTTP request, the first span of a command's trace.

It continues the caller's trace when the request carries a W3C ``traceparent`` header; the
command handler, the relay and the projections add their spans under it (see
:mod:`cqrskit.tracing`). Nothing is recorded unless tracing is configured.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cqrskit import tracing

__all__ = ["TraceRequests"]

_TRACE_HEADERS = tuple(name.encode() for name in tracing.TRACE_KEYS)


class TraceRequests:
    """ASGI middleware: one ``server`` span per HTTP request, named after its route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        parent = {
            name.decode(): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with tracing.span(
            f"{scope['method']} {scope['path']}",
            parent=parent or None,
            kind="server",
            attributes=attributes,
        ):
            await self.app(scope, receive, send_status)
