"""Command routes: create an order, add an item, submit. Each answers with a consistency token."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request, Response

from cqrskit import Command, CommandResult
from orders.domain import AddItems, CreateOrder, LineItem, SubmitOrder
from orders.http import models
from orders.http.jsonbody import DecimalJSONRoute, json_response
from orders.http.problems import problem_for
from orders.http.service import (
    COMMAND_ERRORS,
    TOKEN_HEADER,
    IdempotencyKey,
    OrderIdPath,
    Service,
    ServiceDep,
    log_order,
)

#: generated order ids under an Idempotency-Key are uuid5(ORDER_ID_NAMESPACE, key)
ORDER_ID_NAMESPACE = uuid.UUID("5d1c4c1e-8f1a-4c57-9a41-0d5e3b8f2a77")

__all__ = ["ORDER_ID_NAMESPACE", "router"]

router = APIRouter(route_class=DecimalJSONRoute)


async def _execute(
    service: Service, request: Request, command: Command, key: str | None
) -> CommandResult:
    """Handle ``command``, counting and logging its outcome."""
    command_type = type(command).command_type
    fields = request.scope.setdefault("orders.log", {})
    fields["command"] = command_type
    outcome = "internal-error"
    started = time.perf_counter()
    try:
        result = await service.app.send(command, idempotency_key=key)
        outcome = "replayed" if result.replayed else "ok"
        return result
    except Exception as error:
        outcome = problem_for(error).slug
        raise
    finally:
        service.metrics.commands.labels(command_type, outcome).inc()
        service.metrics.command_seconds.labels(command_type).observe(time.perf_counter() - started)
        fields["outcome"] = outcome


def _accepted(
    order_id: str, result: CommandResult, status_code: int = 200, location: str | None = None
) -> Response:
    """The ``models.CommandAccepted`` document, with the token also as a header."""
    token = str(result.position)
    headers = {"Consistency-Token": token}
    if location is not None:
        headers["Location"] = location
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    document = {"order_id": order_id, "version": result.version, "consistency_token": token}
    return json_response(document, status_code, headers)


def _line(item: models.ItemIn) -> LineItem:
    return LineItem(name=item.name, price=item.price, quantity=item.quantity)


def _new_order_id(key: str | None) -> str:
    # Derived from the idempotency key, so that a retried request creates the same order.
    generated = uuid.uuid5(ORDER_ID_NAMESPACE, key) if key is not None else uuid.uuid4()
    return f"ORD-{generated}"


@router.post(
    "/orders",
    status_code=201,
    response_model=models.CommandAccepted,
    responses={**COMMAND_ERRORS, 201: {"headers": TOKEN_HEADER}},
    tags=["commands"],
)
async def create_order(
    body: models.CreateOrderIn,
    service: ServiceDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a draft order (``CreateOrder``). Answers 201 with the order id and a token."""
    order_id = body.order_id or _new_order_id(idempotency_key)
    log_order(request, order_id)

    items = tuple(_line(item) for item in body.items)
    command = CreateOrder(order_id=order_id, customer_id=body.customer_id, items=items)
    result = await _execute(service, request, command, idempotency_key)
    return _accepted(order_id, result, 201, location=f"/orders/{order_id}")


@router.post(
    "/orders/{order_id}/items",
    response_model=models.CommandAccepted,
    responses={**COMMAND_ERRORS, 200: {"headers": TOKEN_HEADER}},
    tags=["commands"],
)
async def add_item(
    order_id: OrderIdPath,
    body: models.ItemIn | models.ItemsIn,
    service: ServiceDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Add items to a draft order (``AddItems``): one item (``{"name", "price", "quantity"}``)
    or several (``{"items": [...]}``), in one event."""
    log_order(request, order_id)
    lines = (body,) if isinstance(body, models.ItemIn) else body.items
    command = AddItems(order_id=order_id, items=tuple(_line(item) for item in lines))
    result = await _execute(service, request, command, idempotency_key)
    return _accepted(order_id, result)


@router.post(
    "/orders/{order_id}/submit",
    response_model=models.CommandAccepted,
    responses={**COMMAND_ERRORS, 200: {"headers": TOKEN_HEADER}},
    tags=["commands"],
)
async def submit_order(
    order_id: OrderIdPath,
    service: ServiceDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Submit a draft order (``SubmitOrder``)."""
    log_order(request, order_id)
    result = await _execute(service, request, SubmitOrder(order_id=order_id), idempotency_key)
    return _accepted(order_id, result)
