"""Query routes, served from the read model (waiting for a consistency token when given), and
an order's event stream from the event store."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Path, Query, Request, Response

from cqrskit import RecordedEvent
from orders.errors import OrderNotFound
from orders.http import models
from orders.http.jsonbody import DecimalJSONRoute, json_response
from orders.http.service import (
    QUERY_ERRORS,
    ConsistencyToken,
    OrderIdPath,
    Service,
    ServiceDep,
    log_order,
    problem_responses,
)
from orders.money import format_amount
from orders.queries import MAX_PAGE, DailyStats, DashboardStats, OrderPage, OrderView

__all__ = [
    "Cursor",
    "Limit",
    "Order",
    "daily_out",
    "dashboard_out",
    "order_document",
    "order_out",
    "page_out",
    "router",
]

router = APIRouter(route_class=DecimalJSONRoute)


async def _read_your_writes(service: Service, token: str | None) -> None:
    """Refuse a read model that is not the event store's; with a Consistency-Token, wait
    (bounded) until the read model includes that write.

    Called first thing in a query's body, so a request with bad parameters never waits.
    """
    await service.app.check_read_model()
    if token is not None:
        await service.app.read_your_writes(int(token))


def order_document(view: OrderView) -> dict[str, Any]:
    """The ``models.OrderOut`` document of ``view``, ready for msgspec to encode."""
    return {
        "order_id": view.order_id,
        "customer_id": view.customer_id,
        "status": view.status,
        "items": [
            {"name": i.name, "price": format_amount(i.price), "quantity": i.quantity}
            for i in view.items
        ],
        "total": format_amount(view.total),
        "item_count": view.item_count,
        "created_at": view.created_at,
        "submitted_at": view.submitted_at,
    }


def order_out(view: OrderView) -> models.OrderOut:
    return models.OrderOut.model_validate(order_document(view))


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="orders per page")]
Order = Annotated[
    Literal["oldest", "newest"], Query(description="oldest first (the default) or newest first")
]
Cursor = Annotated[
    str | None,
    Query(max_length=400, pattern=r"^[A-Za-z0-9_-]+$", description="next_cursor of a page"),
]


@router.get(
    "/orders/{order_id}",
    response_model=models.OrderOut,
    responses=problem_responses(404, 422, 503, 504),
    tags=["queries"],
)
async def get_order(
    order_id: OrderIdPath, service: ServiceDep, request: Request, token: ConsistencyToken = None
) -> Response:
    """One order, from the read model."""
    log_order(request, order_id)
    await _read_your_writes(service, token)
    view = await service.app.queries.get_order(order_id)
    if view is None:
        raise OrderNotFound(order_id)
    return json_response(order_document(view))


@router.get(
    "/customers/{customer_id}/orders",
    response_model=models.OrderPageOut,
    responses=QUERY_ERRORS,
    tags=["queries"],
)
async def orders_by_customer(
    customer_id: Annotated[str, Path(max_length=models.MAX_TEXT, pattern=models.TEXT_PATTERN)],
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    token: ConsistencyToken = None,
) -> models.OrderPageOut:
    """A customer's orders, oldest first, one page at a time."""
    await _read_your_writes(service, token)
    page = await service.app.queries.orders_by_customer(customer_id, limit=limit, cursor=cursor)
    return page_out(page)


@router.get(
    "/orders",
    response_model=models.OrderPageOut,
    responses=QUERY_ERRORS,
    tags=["queries"],
)
async def list_orders(
    service: ServiceDep,
    status: Annotated[Literal["draft", "submitted"] | None, Query()] = None,
    customer_id: Annotated[
        str | None, Query(max_length=models.MAX_TEXT, pattern=models.TEXT_PATTERN)
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "oldest",
    token: ConsistencyToken = None,
) -> models.OrderPageOut:
    """Every order, or those in a status and/or of a customer: oldest (or newest) first, one
    page at a time."""
    await _read_your_writes(service, token)
    page = await service.app.queries.list_orders(
        status=status,
        customer_id=customer_id,
        limit=limit,
        cursor=cursor,
        newest_first=order == "newest",
    )
    return page_out(page)


@router.get(
    "/stats/dashboard",
    response_model=models.DashboardOut,
    responses=QUERY_ERRORS,
    tags=["queries"],
)
async def dashboard_stats(
    service: ServiceDep, token: ConsistencyToken = None
) -> models.DashboardOut:
    """Totals over every order: count, revenue, drafts, submitted, average order value."""
    await _read_your_writes(service, token)
    return dashboard_out(await service.app.queries.dashboard_stats())


@router.get(
    "/stats/daily",
    response_model=models.DailyStatsOut,
    responses=QUERY_ERRORS,
    tags=["queries"],
)
async def daily_stats(service: ServiceDep, token: ConsistencyToken = None) -> models.DailyStatsOut:
    """Submitted orders and revenue per UTC day of submission."""
    await _read_your_writes(service, token)
    return daily_out(await service.app.queries.daily_stats())


@router.get(
    "/orders/{order_id}/events",
    response_model=models.EventsOut,
    responses=problem_responses(404, 422, 503),
    tags=["audit"],
)
async def order_events(
    order_id: OrderIdPath,
    service: ServiceDep,
    request: Request,
    from_version: Annotated[int, Query(ge=1, le=2**31)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> models.EventsOut:
    """The order's event stream, from the event store (always current: no token needed)."""
    log_order(request, order_id)
    found = await service.app.order_events(order_id, from_version=from_version, limit=limit)
    return models.EventsOut(
        order_id=order_id,
        events=[
            models.EventOut(
                event_id=str(e.event_id),
                stream_id=e.stream_id,
                version=e.stream_version,
                position=str(e.position),
                type=e.event_type,
                schema_version=e.schema_version,
                recorded_at=e.recorded_at,
                data=msgspec.json.decode(e.data),
                metadata=msgspec.json.decode(e.metadata) if e.metadata else {},
                current=_current_out(service.app.read_current(e)),
            )
            for e in found
        ],
    )


def _current_out(current: RecordedEvent | None) -> models.CurrentEventOut | None:
    if current is None:
        return None
    return models.CurrentEventOut(
        type=current.event_type,
        schema_version=current.schema_version,
        data=msgspec.json.decode(current.data),
    )


def dashboard_out(stats: DashboardStats) -> models.DashboardOut:
    return models.DashboardOut(
        total_orders=stats.total_orders,
        total_revenue=format_amount(stats.total_revenue),
        draft_orders=stats.draft_orders,
        submitted_orders=stats.submitted_orders,
        average_order_value=format_amount(stats.average_order_value),
    )


def daily_out(days: list[DailyStats]) -> models.DailyStatsOut:
    return models.DailyStatsOut(
        days=[
            models.DayOut(date=d.date, count=d.count, revenue=format_amount(d.revenue))
            for d in days
        ]
    )


def page_out(page: OrderPage) -> models.OrderPageOut:
    return models.OrderPageOut(
        orders=[order_out(view) for view in page.orders], next_cursor=page.next_cursor
    )
