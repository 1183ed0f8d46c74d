"""JSON request bodies decoded with numbers as Decimal, and a cap on body size.

FastAPI decodes bodies with :func:`json.loads`, which turns ``999.000000000000000001`` into the
float ``999.0`` before any validator sees it. :class:`DecimalJSONRoute` decodes with msgspec
instead, every non-integer number becoming a :class:`~decimal.Decimal` of exactly the digits
sent (and invalid UTF-8 or lone surrogates being refused).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orders.http.problems import Problem, problem_response

__all__ = [
    "MAX_BODY_BYTES",
    "BodyLimit",
    "DecimalJSONRequest",
    "DecimalJSONRoute",
    "decode_json",
    "json_response",
]

MAX_BODY_BYTES = 64 * 1024

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder()


def decode_json(body: bytes) -> Any:
    """A JSON document with every non-integer number as an exact :class:`~decimal.Decimal`
    (``msgspec.DecodeError``, a ``ValueError``, when it is not JSON)."""
    return _decoder.decode(body)


def json_response(
    document: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """``document`` encoded by msgspec straight to bytes (the routes still declare their
    pydantic models, which make the OpenAPI schema)."""
    return Response(
        _encoder.encode(document),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


class DecimalJSONRequest(Request):
    """A request whose :meth:`json` keeps numbers exact."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = decode_json(body)
            except msgspec.DecodeError as error:
                # FastAPI turns JSONDecodeError (only) into a 422 validation error.
                raise json.JSONDecodeError(str(error), body.decode("utf-8", "replace"), 0) from None
        return self._json


class DecimalJSONRoute(APIRoute):
    """An API route that hands its endpoint a :class:`DecimalJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if self.body_field is not None:
                _check_media_type(request.headers.get("content-type"))
            return await handler(DecimalJSONRequest(request.scope, request.receive))

        return handle


def _check_media_type(content_type: str | None) -> None:
    """Refuse (415) a body declared as anything but JSON; no ``Content-Type`` is read as JSON."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise HTTPException(
        415,
        f"the body must be JSON (Content-Type: application/json), not {media_type or 'empty'}",
        headers={"Accept": "application/json"},
    )


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with a 413 problem.

    A declared ``Content-Length`` over the limit is refused before reading; a chunked body is
    counted as it streams and the request fails once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, "Content Too Large")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(
            413,
            "body-too-large",
            "Content Too Large",
            f"request bodies are limited to {self.max_bytes} bytes",
        )
        log_fields = scope.get("orders.log")
        if isinstance(log_fields, dict):
            log_fields["outcome"] = problem.slug
        path = scope.get("path", "")
        await problem_response(problem, path)(scope, receive, send)
