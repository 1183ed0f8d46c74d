"""HTTP methods: HEAD wherever GET is served, and an ``Allow`` header that lists every method a
path has (the routes of one path may come from several routers)."""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "allowed_methods"]

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class HeadAsGet:
    """ASGI middleware: answer ``HEAD`` as the ``GET`` of the same URL would, without a body
    (status and headers, ``Content-Length`` included, are the ``GET``'s)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def allowed_methods(scope: Scope) -> str:
    """The ``Allow`` header for the path of ``scope``: every method some route serves it
    with (and HEAD with GET), found by asking each route whether it matches."""
    routes = scope["app"].router.routes
    methods = [
        method
        for method in _ORDER
        if method != "HEAD"
        and any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)
