"""The Orders read side: projections from order events to denormalised tables.

Two projections, each with its own checkpoint: ``orders`` keeps one row per order (for
``get_order``, ``orders_by_customer`` and ``orders_by_status``), ``order_stats`` keeps the daily
and dashboard figures, as increments (:meth:`cqrskit.ViewTransaction.increment`) so that they
stay exact when partitioned workers (``orders project --nats``) count side by side. Every
timestamp comes from the event's ``recorded_at``, never from the clock, so a rebuild gives the
same tables.
"""

from __future__ import annotations

from datetime import UTC

from cqrskit import Column, ColumnType, Projection, RecordedEvent, Table, ViewTransaction
from orders.domain import ItemsAdded, LineItem, OrderCreated, OrderSubmitted
from orders.money import format_amount, to_cents

__all__ = [
    "DAILY_STATS",
    "DASHBOARD",
    "DASHBOARD_SCOPE",
    "ORDERS",
    "ORDER_TOTALS",
    "PROJECTIONS",
    "orders_projection",
    "stats_projection",
]

TEXT, INTEGER, JSON, TIMESTAMP = (
    ColumnType.TEXT,
    ColumnType.INTEGER,
    ColumnType.JSON,
    ColumnType.TIMESTAMP,
)

ORDERS = Table(
    "orders",
    columns=(
        Column("order_id", TEXT),
        Column("customer_id", TEXT),
        Column("status", TEXT),
        Column("items", JSON),
        Column("total_cents", INTEGER),
        Column("item_count", INTEGER),
        Column("created_at", TIMESTAMP),
        Column("submitted_at", TIMESTAMP, nullable=True),
    ),
    key=("order_id",),
    indexes=(
        ("customer_id", "created_at", "order_id"),
        ("status", "created_at", "order_id"),
        ("created_at", "order_id"),  # every order, oldest first
    ),
)

ORDER_TOTALS = Table(
    "order_stats_totals",
    columns=(Column("order_id", TEXT), Column("total_cents", INTEGER), Column("status", TEXT)),
    key=("order_id",),
)
DAILY_STATS = Table(
    "daily_stats",
    columns=(Column("day", TEXT), Column("order_count", INTEGER), Column("revenue_cents", INTEGER)),
    key=("day",),
)
DASHBOARD = Table(
    "dashboard_stats",
    columns=(
        Column("scope", TEXT),
        Column("total_orders", INTEGER),
        Column("total_revenue_cents", INTEGER),
        Column("draft_orders", INTEGER),
        Column("submitted_orders", INTEGER),
    ),
    key=("scope",),
)
DASHBOARD_SCOPE = "all"


def _item_row(item: LineItem) -> dict[str, object]:
    return {"name": item.name, "price": format_amount(item.price), "quantity": item.quantity}


def _amount_cents(items: tuple[LineItem, ...]) -> int:
    return sum(to_cents(item.price) * item.quantity for item in items)


orders_projection = Projection("orders", tables=[ORDERS])


@orders_projection.on(OrderCreated)
def _order_created(event: OrderCreated, recorded: RecordedEvent, view: ViewTransaction) -> None:
    view.put(
        ORDERS,
        {
            "order_id": event.order_id,
            "customer_id": event.customer_id,
            "status": "draft",
            "items": [_item_row(item) for item in event.items],
            "total_cents": _amount_cents(event.items),
            "item_count": len(event.items),
            "created_at": recorded.recorded_at,
            "submitted_at": None,
        },
    )


@orders_projection.on(ItemsAdded)
def _items_added(event: ItemsAdded, recorded: RecordedEvent, view: ViewTransaction) -> None:
    order = view.get(ORDERS, event.order_id)
    if order is None:  # the write side guarantees OrderCreated came first
        return
    order["items"].extend(_item_row(item) for item in event.items)
    order["total_cents"] += _amount_cents(event.items)
    order["item_count"] += len(event.items)
    view.put(ORDERS, order)


@orders_projection.on(OrderSubmitted)
def _order_submitted(event: OrderSubmitted, recorded: RecordedEvent, view: ViewTransaction) -> None:
    order = view.get(ORDERS, event.order_id)
    if order is None:
        return
    order["status"] = "submitted"
    order["submitted_at"] = recorded.recorded_at
    view.put(ORDERS, order)


stats_projection = Projection("order_stats", tables=[ORDER_TOTALS, DAILY_STATS, DASHBOARD])


def _count(view: ViewTransaction, **deltas: int) -> None:
    # Increments, not read-modify-write: partitioned workers update these rows side by side.
    view.increment(DASHBOARD, {"scope": DASHBOARD_SCOPE, **deltas})


@stats_projection.on(OrderCreated)
def _count_created(event: OrderCreated, recorded: RecordedEvent, view: ViewTransaction) -> None:
    total = _amount_cents(event.items)
    view.put(ORDER_TOTALS, {"order_id": event.order_id, "total_cents": total, "status": "draft"})
    _count(view, total_orders=1, total_revenue_cents=total, draft_orders=1)


@stats_projection.on(ItemsAdded)
def _count_items(event: ItemsAdded, recorded: RecordedEvent, view: ViewTransaction) -> None:
    order = view.get(ORDER_TOTALS, event.order_id)
    if order is None:
        return
    amount = _amount_cents(event.items)
    order["total_cents"] += amount
    view.put(ORDER_TOTALS, order)
    _count(view, total_revenue_cents=amount)


@stats_projection.on(OrderSubmitted)
def _count_submitted(event: OrderSubmitted, recorded: RecordedEvent, view: ViewTransaction) -> None:
    order = view.get(ORDER_TOTALS, event.order_id)
    if order is None:
        return
    order["status"] = "submitted"
    view.put(ORDER_TOTALS, order)
    _count(view, draft_orders=-1, submitted_orders=1)
    day = recorded.recorded_at.astimezone(UTC).date().isoformat()
    view.increment(
        DAILY_STATS, {"day": day, "order_count": 1, "revenue_cents": order["total_cents"]}
    )


PROJECTIONS = (orders_projection, stats_projection)
