"""Errors as RFC 9457 ``application/problem+json``: the ONE place that maps errors to statuses.

Every exception that reaches the HTTP layer goes through :func:`problem_for`; routes never pick a
status code for an error themselves. Problem types are relative URIs (``/problems/<slug>``)
listed in ``docs/http.md``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cqrskit import (
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    IdempotencyKeyReused,
    InvalidCommand,
    ReadModelMismatch,
    StoreUnavailable,
    StreamNotFound,
    UndecodableEvent,
    UnknownEventType,
)
from orders.errors import (
    ConsistencyTimeout,
    InvalidQuery,
    OrderNotFound,
    TokenBeyondHead,
    UnknownProjection,
)
from orders.http.methods import allowed_methods

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "install",
    "problem_for",
    "problem_reply",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("orders.http")


@dataclass
class Problem:
    """One problem document (RFC 9457) and the headers that go with it."""

    status: int
    slug: str
    title: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)

    def body(self, instance: str) -> dict[str, Any]:
        return {
            "type": f"/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            **self.extensions,
        }


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem_for(error: BaseException) -> Problem:
    """The problem (status, type, detail) for ``error``: the service's whole error mapping.

    validation (of the request, a command or a query) → 422; unknown order or projection →
    404; business
    rule → 409; a concurrency conflict that outlived the retries → 409 with ``Retry-After``;
    a reused idempotency key → 422; the store
    unreachable → 503; the read model not caught up with a consistency token → 504; a stored
    event this release cannot read → 500 naming it; anything else → 500 without internals.
    """
    match error:
        case RequestValidationError():
            return Problem(
                422,
                "validation-error",
                "Invalid request",
                "the request does not match the schema: see errors",
                extensions={"errors": _validation_errors(error)},
            )
        case IdempotencyKeyReused():
            return Problem(422, "idempotency-key-reused", "Idempotency key reused", str(error))
        case InvalidCommand():
            return Problem(422, "invalid-command", "Invalid command", str(error))
        case TokenBeyondHead():
            title = "Invalid consistency token"
            return Problem(422, "invalid-consistency-token", title, str(error))
        case InvalidQuery():
            return Problem(422, "invalid-query", "Invalid query", str(error))
        case OrderNotFound(order_id=order_id):
            return Problem(
                404,
                "order-not-found",
                "Order not found",
                str(error),
                extensions={"order_id": order_id},
            )
        case UnknownProjection(name=name):
            return Problem(
                404,
                "projection-not-found",
                "Projection not found",
                str(error),
                extensions={"projection": name},
            )
        case StreamNotFound(stream_id=stream):
            order_id = stream.removeprefix("order-")
            return Problem(
                404,
                "order-not-found",
                "Order not found",
                f"order {order_id!r} not found",
                extensions={"order_id": order_id},
            )
        case ConcurrencyError():
            return Problem(
                409,
                "concurrency-conflict",
                "Concurrent modification",
                "the order was changed concurrently too often; retry the request",
                headers={"Retry-After": "1"},
            )
        case DomainError():
            slug = _kebab(type(error).__name__)
            return Problem(409, slug, "Business rule violated", str(error))
        case ReadModelMismatch():
            return Problem(
                503,
                "read-model-refused",
                "Read model refused",
                str(error),
                headers={"Retry-After": "60"},
            )
        case UndecodableEvent() | UnknownEventType():
            # Not a bug to hide: the order's history holds an event this release cannot read
            # (written by a newer release, or an upcaster missing); the detail says which.
            return Problem(500, "unreadable-event", "Stored event cannot be read", str(error))
        case StoreUnavailable() | ConfigurationError():
            return Problem(
                503,
                "store-unavailable",
                "Store unavailable",
                "the event store cannot be reached; retry later",
                headers={"Retry-After": "2"},
            )
        case ConsistencyTimeout():
            return Problem(
                504,
                "consistency-timeout",
                "Read model not caught up",
                str(error),
                headers={"Retry-After": "1"},
            )
        case StarletteHTTPException(status_code=status, detail=detail):
            headers = dict(error.headers or {})
            slug = {413: "body-too-large", 415: "unsupported-media-type"}.get(status, "http-error")
            title = "Unsupported Media Type" if status == 415 else str(detail)
            return Problem(status, slug, title, str(detail), headers=headers)
    return Problem(500, "internal-error", "Internal error", "an unexpected error occurred")


def _validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    # Only loc/msg/type: pydantic's "input" and "ctx" may hold values that are not JSON
    # (Decimal, exceptions) and would echo back arbitrary amounts of the request.
    return [
        {
            "loc": [str(part) for part in item.get("loc", ())],
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in error.errors()
    ]


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """``problem`` as an ``application/problem+json`` response."""
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


async def problem_reply(request: Request, error: Exception) -> Response:
    """The problem response for ``error`` raised while handling ``request`` (logged when
    unexpected, and named in the request's log line)."""
    problem = problem_for(error)
    if problem.status == 405:  # Starlette names the methods of one route; a path may have more
        problem.headers["Allow"] = allowed_methods(request.scope)
    if problem.status >= 500 and problem.slug == "internal-error":
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    log_fields = request.scope.get("orders.log")
    if isinstance(log_fields, dict):
        log_fields.setdefault("outcome", problem.slug)
    return problem_response(problem, request.url.path)


def install(api: FastAPI) -> None:
    """Route every error of ``api`` through :func:`problem_for`."""
    for error_type in (
        RequestValidationError,
        StarletteHTTPException,
        IdempotencyKeyReused,
        InvalidCommand,
        InvalidQuery,
        OrderNotFound,
        UnknownProjection,
        StreamNotFound,
        ConcurrencyError,
        DomainError,
        ReadModelMismatch,
        StoreUnavailable,
        ConfigurationError,
        ConsistencyTimeout,
        Exception,
    ):
        api.add_exception_handler(error_type, problem_reply)
