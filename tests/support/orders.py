"""Helpers shared by the Orders integration tests."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from cqrskit import EventCodec, EventStore, ProjectionRunner, ReadStore
from cqrskit.memory import InMemoryReadStore
from orders.app import OrdersApp
from orders.domain import EVENT_TYPES, AddItems, CreateOrder, LineItem, SubmitOrder
from orders.projections import PROJECTIONS


async def fill_orders(app: OrdersApp, count: int, prefix: str, concurrency: int = 32) -> None:
    """``count`` orders, each created with two items, given a third, and every other submitted."""

    async def one(n: int) -> None:
        order_id = f"{prefix}-{n}"
        pen = LineItem(name="Pen", price=Decimal("1.25"), quantity=n % 5 + 1)
        book = LineItem(name="Book", price=Decimal("19.99"), quantity=1)
        await app.commands.handle(
            CreateOrder(order_id=order_id, customer_id=f"C-{n % 7}", items=(pen, book))
        )
        await app.commands.handle(AddItems(order_id=order_id, items=(pen,)))
        if n % 2 == 0:
            await app.commands.handle(SubmitOrder(order_id=order_id))

    for start in range(0, count, concurrency):
        await asyncio.gather(*(one(n) for n in range(start, min(start + concurrency, count))))


async def snapshot(read: ReadStore) -> dict[str, list[dict[str, Any]]]:
    """Every Orders read-model table, ordered by key."""
    return {
        table.name: await read.find(table, order_by=table.key)
        for projection in PROJECTIONS
        for table in projection.tables
    }


async def full_replay(events: EventStore) -> dict[str, list[dict[str, Any]]]:
    """The Orders read model built from scratch, in memory, from every event in ``events``."""
    read = InMemoryReadStore()
    codec = EventCodec(EVENT_TYPES)
    for projection in PROJECTIONS:
        runner = ProjectionRunner(projection, events, read, codec)
        await runner.setup()
        await runner.catch_up()
    return await snapshot(read)
