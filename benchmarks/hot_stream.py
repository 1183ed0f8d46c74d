"""Hot stream: many clients adding items to one order at once, through one writer (one
process: its commands for the stream take turns) and through two (conflicts between them are
retried, up to the handler's limits; those that still conflict are counted, not retried)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal

from benchmarks.cqrskit_bench import open_app
from benchmarks.databases import Database
from benchmarks.measure import check
from cqrskit import CommandHandler, ConcurrencyError
from orders.app import OrdersApp, register_commands
from orders.domain import AddItems, CreateOrder, LineItem, order_decider, stream_id

CLIENTS = 32
ORDER_ID = "HOT-1"


@dataclass(frozen=True)
class HotStream:
    commands_per_second: float  # acknowledged AddItems per second
    conflict_share: float  # of the commands sent, the share answered ConcurrencyError
    commands: int


def _item(n: int) -> LineItem:
    return LineItem(name=f"Pen {n}", price=Decimal("1.25"), quantity=n % 3 + 1)


async def hot_stream(db: Database, commands: int, writers: int) -> HotStream:
    """``commands`` AddItems on one order from ``CLIENTS`` concurrent clients, spread over
    ``writers`` command handlers (separate applications on durable backends, like separate
    processes); then check that the order holds exactly the acknowledged items."""
    apps: list[OrdersApp] = [await open_app(db)]
    try:
        handlers = [apps[0].commands]
        for _ in range(writers - 1):
            if db.backend == "memory":  # one store per app: share the first one's
                handler = CommandHandler(apps[0].backend.events, apps[0].codec)
                register_commands(handler)
                handlers.append(handler)
            else:
                apps.append(await open_app(db))
                handlers.append(apps[-1].commands)
        await handlers[0].handle(CreateOrder(order_id=ORDER_ID, customer_id="C"))
        for handler in handlers[1:]:  # every writer has the order cached, as in a live system
            await handler.load(order_decider, stream_id(ORDER_ID))
        acknowledged: list[int] = []
        conflicts = 0

        async def client(number: int) -> None:
            nonlocal conflicts
            handler = handlers[number % len(handlers)]
            for n in range(number, commands, CLIENTS):
                try:
                    await handler.handle(AddItems(order_id=ORDER_ID, items=(_item(n),)))
                except ConcurrencyError:
                    conflicts += 1
                else:
                    acknowledged.append(n)

        start = time.perf_counter()
        await asyncio.gather(*(client(number) for number in range(CLIENTS)))
        seconds = time.perf_counter() - start
        await _verify(apps[0], acknowledged)
        return HotStream(len(acknowledged) / seconds, conflicts / commands, commands)
    finally:
        for app in apps:
            await app.close()


async def _verify(app: OrdersApp, acknowledged: list[int]) -> None:
    loader = CommandHandler(app.backend.events, app.codec, cache_size=0)
    version, state = await loader.load(order_decider, stream_id(ORDER_ID))
    check(version == 1 + len(acknowledged), f"version {version}, {len(acknowledged)} acknowledged")
    check(state.item_count == len(acknowledged), f"{state.item_count} lines")
    total = sum((_item(n).amount for n in acknowledged), Decimal("0.00"))
    check(state.total == total, f"total {state.total} != {total}")
