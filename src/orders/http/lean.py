"""The hottest routes called straight from ASGI, past FastAPI's routing and dependency solving.

``GET /orders/{order_id}`` and ``POST /orders`` make most of the service's traffic. In their
plain form (a valid order id, no ``Consistency-Token`` or ``Idempotency-Key``, a JSON body that
``CreateOrderIn`` accepts) :class:`LeanRoutes` calls the very endpoint functions that FastAPI
routes to, with the parameters FastAPI would have passed, and sends their response. Anything
else (another route or method, a parameter FastAPI would refuse, a header these routes must
check) goes through FastAPI unchanged, with the request body replayed, so every answer, error
and the OpenAPI document stay FastAPI's. What the lean path saves per request is the router's
walk over every route, dependency solving and parameter validation by pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.domain import MAX_TEXT
from orders.http import commands, models, queries
from orders.http.jsonbody import decode_json
from orders.http.problems import problem_reply
from orders.http.service import Service

__all__ = ["LeanRoutes"]

_ORDER_ID = re.compile(models.TEXT_PATTERN.removeprefix("^").removesuffix("$"))
_ORDER_PREFIX = "/orders/"
#: headers after which a request takes the full path (parameters the lean path does not check)
_FULL_PATH_HEADERS = frozenset({b"consistency-token", b"idempotency-key"})


class LeanRoutes:
    """ASGI middleware: ``GET /orders/{order_id}`` and ``POST /orders`` in their plain form,
    without FastAPI's per-request machinery; every other request passes through."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes = {
            route.endpoint: route
            for router in (commands.router, queries.router)
            for route in router.routes
            if isinstance(route, APIRoute)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method = scope["method"]
            path: str = scope["path"]
            if method == "GET" and path.startswith(_ORDER_PREFIX):
                order_id = path[len(_ORDER_PREFIX) :]
                if _plain_order_id(order_id) and _plain_headers(scope):
                    await self._get_order(scope, send, order_id)
                    return
            elif method == "POST" and path == "/orders" and _plain_headers(scope):
                await self._create_order(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _get_order(self, scope: Scope, send: Send, order_id: str) -> None:
        request = self._enter(scope, queries.get_order, {"order_id": order_id})
        await self._reply(
            request, send, lambda: queries.get_order(order_id, self._service, request)
        )

    async def _create_order(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._enter(scope, commands.create_order, {})
        try:
            messages, body = await _read_body(receive)
        except Exception as error:  # BodyLimit's 413 for a chunked body, as on the full path
            await self._problem(request, send, error)
            return
        try:
            if body is None or not _json_content(scope):
                raise ValueError("not a plain JSON body")
            order = models.CreateOrderIn.model_validate(decode_json(body))
        except (ValueError, pydantic.ValidationError):
            # FastAPI answers it (422, 415, ...), as it would have without this path
            await self.app(scope, _replay(messages, receive), send)
            return
        await self._reply(
            request, send, lambda: commands.create_order(order, self._service, request)
        )

    @property
    def _service(self) -> Service:
        service: Service = self.api.state.service
        return service

    def _enter(
        self, scope: Scope, endpoint: Callable[..., Any], path_params: dict[str, str]
    ) -> Request:
        """What the router would have put in ``scope`` for ``endpoint`` (the request log names
        the route and the order from it)."""
        scope["route"] = self._routes[endpoint]
        scope["path_params"] = path_params
        scope["app"] = self.api
        return Request(scope)

    async def _reply(
        self, request: Request, send: Send, endpoint: Callable[[], Awaitable[Response]]
    ) -> None:
        try:
            response = await endpoint()
        except Exception as error:
            await self._problem(request, send, error)
            return
        await response(request.scope, _no_body, send)

    async def _problem(self, request: Request, send: Send, error: Exception) -> None:
        response = await problem_reply(request, error)
        await response(request.scope, _no_body, send)
        if response.status_code == 500:
            raise error  # an unexpected error: raised on after the answer, as on the full path


def _plain_order_id(order_id: str) -> bool:
    """An order id FastAPI's path parameter accepts (a stricter check is fine: what fails it
    takes the full path)."""
    return (
        0 < len(order_id) <= MAX_TEXT
        and "/" not in order_id
        and _ORDER_ID.fullmatch(order_id) is not None
    )


def _plain_headers(scope: Scope) -> bool:
    return not scope["query_string"] and not any(
        name in _FULL_PATH_HEADERS for name, _ in scope["headers"]
    )


def _json_content(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return True  # no Content-Type is read as JSON, as on the full path


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message of the request body and the body (None if the client left)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
