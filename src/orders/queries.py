"""The Orders query side: answers served from the read model only."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec

from cqrskit import ReadStore, Row
from orders.errors import InvalidCursor, InvalidQuery
from orders.money import average, from_cents
from orders.projections import DAILY_STATS, DASHBOARD, DASHBOARD_SCOPE, ORDERS

__all__ = [
    "MAX_PAGE",
    "DailyStats",
    "DashboardStats",
    "OrderLine",
    "OrderPage",
    "OrderQueries",
    "OrderView",
]

MAX_PAGE = 500


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    price: Decimal
    quantity: int


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    customer_id: str
    status: Literal["draft", "submitted"]
    items: tuple[OrderLine, ...]
    total: Decimal
    item_count: int
    created_at: datetime
    submitted_at: datetime | None


class OrderPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of orders; pass ``next_cursor`` back to get the next (None: last page)."""

    orders: tuple[OrderView, ...]
    next_cursor: str | None


class DailyStats(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    count: int
    revenue: Decimal


class DashboardStats(msgspec.Struct, frozen=True, kw_only=True):
    total_orders: int
    total_revenue: Decimal
    draft_orders: int
    submitted_orders: int
    average_order_value: Decimal


class OrderQueries:
    """``get_order``, ``orders_by_customer``, ``orders_by_status``, ``daily_stats``,
    ``dashboard_stats``: the seed's queries, over the read store."""

    def __init__(self, read_store: ReadStore) -> None:
        self._read = read_store

    async def get_order(self, order_id: str) -> OrderView | None:
        row = await self._read.get(ORDERS, order_id)
        return _order_view(row) if row is not None else None

    async def orders_by_customer(
        self, customer_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> OrderPage:
        return await self._page({"customer_id": customer_id}, limit, cursor)

    async def orders_by_status(
        self, status: str, *, limit: int = 100, cursor: str | None = None
    ) -> OrderPage:
        return await self._page({"status": status}, limit, cursor)

    async def list_orders(
        self,
        *,
        status: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> OrderPage:
        """Orders oldest first (or ``newest_first``), all of them or those in ``status``
        and/or of ``customer_id``."""
        where = {"status": status, "customer_id": customer_id}
        conditions = {k: v for k, v in where.items() if v is not None}
        return await self._page(conditions, limit, cursor, descending=newest_first)

    async def daily_stats(self) -> list[DailyStats]:
        rows = await self._read.find(DAILY_STATS, order_by=("day",))
        return [
            DailyStats(
                date=row["day"], count=row["order_count"], revenue=from_cents(row["revenue_cents"])
            )
            for row in rows
        ]

    async def dashboard_stats(self) -> DashboardStats:
        row = await self._read.get(DASHBOARD, DASHBOARD_SCOPE)
        total = row["total_orders"] if row else 0
        revenue = row["total_revenue_cents"] if row else 0
        return DashboardStats(
            total_orders=total,
            total_revenue=from_cents(revenue),
            draft_orders=row["draft_orders"] if row else 0,
            submitted_orders=row["submitted_orders"] if row else 0,
            average_order_value=average(revenue, total),
        )

    async def _page(
        self, where: dict[str, Any], limit: int, cursor: str | None, *, descending: bool = False
    ) -> OrderPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidQuery(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        rows = await self._read.find(
            ORDERS,
            where=where,
            order_by=("created_at", "order_id"),
            after=_decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
            descending=descending,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]) if more else None
        return OrderPage(orders=tuple(_order_view(row) for row in rows), next_cursor=next_cursor)


def _order_view(row: Row) -> OrderView:
    return OrderView(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        status=row["status"],
        items=tuple(
            OrderLine(name=item["name"], price=Decimal(item["price"]), quantity=item["quantity"])
            for item in row["items"]
        ),
        total=from_cents(row["total_cents"]),
        item_count=row["item_count"],
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
    )


def _encode_cursor(row: Row) -> str:
    raw = msgspec.json.encode([row["created_at"], row["order_id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = msgspec.json.decode(raw, type=tuple[datetime, str])
    except (binascii.Error, ValueError, msgspec.DecodeError) as error:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from error
    return created_at, order_id
