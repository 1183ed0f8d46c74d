"""The figures measured on the cqrskit side, through the Orders application's public API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks import workload as w
from benchmarks.databases import Database
from benchmarks.measure import check, rate
from cqrskit import CommandHandler
from orders.app import OrdersApp, Settings, build_app
from orders.domain import ItemsAdded, OrderCreated, OrderSubmitted, order_decider, stream_id

SIDE = "cqrskit"
PAGE = 20  # rows per page of the list queries, on both sides


async def open_app(db: Database) -> OrdersApp:
    return await build_app(Settings(db_url=db.url))


async def run_order(app: OrdersApp, i: int, orders: int) -> int:
    """Order ``i``'s three commands; the global position of the last event."""
    position = 0
    for command in w.commands_for(i, orders=orders):
        position = (await app.commands.handle(command)).position
    return position


async def verify_orders(app: OrdersApp, indexes: range | list[int]) -> None:
    """Each order's state, read cold from the store, is what its commands produce."""
    loader = CommandHandler(app.backend.events, app.codec, cache_size=0)
    for i in indexes:
        version, state = await loader.load(order_decider, stream_id(w.order_id(i)))
        check(version == 3 and state.status == "submitted", f"order {i}: {version} {state}")
        check(state.item_count == 3, f"order {i} has {state.item_count} items")
        cents = int(state.total * 100)
        check(cents == w.order_total_cents(i), f"order {i} total {cents}")


async def verify_read_model(app: OrdersApp, expected: w.Expected, sample: list[int]) -> None:
    """The read model holds the workload's totals and the sampled orders' rows."""
    stats = await app.queries.dashboard_stats()
    check(stats.total_orders == expected.orders, f"orders {stats.total_orders}")
    check(stats.submitted_orders == expected.submitted, f"submitted {stats.submitted_orders}")
    revenue = int(stats.total_revenue * 100)
    check(revenue == expected.revenue_cents, f"revenue {revenue} != {expected.revenue_cents}")
    daily = await app.queries.daily_stats()
    check(int(sum(d.revenue for d in daily) * 100) == expected.revenue_cents, "daily revenue")
    check(sum(d.count for d in daily) == expected.submitted, "daily count")
    for i in sample:
        view = await app.queries.get_order(w.order_id(i))
        check(view is not None, f"order {i} missing from the read model")
        assert view is not None
        check(int(view.total * 100) == w.order_total_cents(i), f"order {i} row total")


async def commands(
    db: Database, orders: int, clients: int, *, verify: bool = True
) -> tuple[float, int]:
    """(commands/s, commands) running ``orders`` orders from ``clients`` concurrent tasks;
    then (unless ``verify`` is false, for profiling) check the store and the read model."""
    app = await open_app(db)
    try:

        async def client(share: range) -> None:
            for i in share:
                await run_order(app, i, orders)

        start = time.perf_counter()
        await asyncio.gather(*(client(share) for share in w.split(orders, clients)))
        seconds = time.perf_counter() - start
        if verify:
            await verify_orders(app, range(orders))
            await app.catch_up()
            await verify_read_model(app, w.Expected.for_orders(orders), [0, orders - 1])
        return rate(orders * w.COMMANDS_PER_ORDER, seconds), orders * w.COMMANDS_PER_ORDER
    finally:
        await app.close()


def batch_events(b: int) -> list[OrderCreated | ItemsAdded | OrderSubmitted]:
    """An order's 100 events: created, 98 items added, submitted (as on the other side)."""
    oid = w.order_id(b, "b")
    created = OrderCreated(
        order_id=oid,
        customer_id=w.customer_id(b, 1),
        items=tuple(w.line(x) for x in w.created_items(b)),
    )
    added = [ItemsAdded(order_id=oid, items=(w.line(w.batch_item(j)),)) for j in range(98)]
    return [created, *added, OrderSubmitted(order_id=oid)]


async def batch_append(db: Database, batches: int) -> float:
    """events/s appending 100-event batches with ``EventStore.append`` (one writer)."""
    app = await open_app(db)
    store, codec = app.backend.events, app.codec
    try:
        start = time.perf_counter()
        for b in range(batches):
            events = [codec.new_event(event) for event in batch_events(b)]
            await store.append(stream_id(w.order_id(b, "b")), events, 0)
        seconds = time.perf_counter() - start
        last = await store.read_stream(stream_id(w.order_id(batches - 1, "b")))
        check(len(last) == 100, f"last batch stream has {len(last)} events")
        return rate(batches * 100, seconds)
    finally:
        await app.close()


async def prefill(db: Database, orders: int) -> None:
    """Store ``orders`` complete orders in ``db`` (one append of three events each)."""
    app = await open_app(db)
    try:
        await prefill_app(app, orders)
    finally:
        await app.close()


async def prefill_app(app: OrdersApp, orders: int, concurrency: int = 256) -> None:
    """Store ``orders`` complete orders through ``app``'s event store, not timed."""
    store, codec = app.backend.events, app.codec

    async def one(i: int) -> None:
        items = tuple(w.line(x) for x in w.created_items(i))
        oid = w.order_id(i)
        events = [
            OrderCreated(order_id=oid, customer_id=w.customer_id(i, orders), items=items),
            ItemsAdded(order_id=oid, items=(w.line(w.added_item(i)),)),
            OrderSubmitted(order_id=oid),
        ]
        await store.append(stream_id(oid), [codec.new_event(e) for e in events], 0)

    for first in range(0, orders, concurrency):
        await asyncio.gather(*(one(i) for i in range(first, min(first + concurrency, orders))))


async def read_everything(app: OrdersApp, batch: int = 1000) -> tuple[float, int]:
    """Seconds to read the whole log in global order (``read_all`` batches), and the count."""
    events, position, count = app.backend.events, 0, 0
    start = time.perf_counter()
    while page := await events.read_all(position, batch):
        position, count = page[-1].position, count + len(page)
    return time.perf_counter() - start, count


async def projection_build(app: OrdersApp) -> float:
    """Seconds to rebuild every Orders projection from position 0."""
    start = time.perf_counter()
    await app.rebuild()
    return time.perf_counter() - start


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Microseconds for each of ``count`` awaited calls."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        out.append((time.perf_counter() - start) * 1e6)
    return out


async def load_latencies(app: OrdersApp, sample: list[int]) -> list[float]:
    """Cold loads (read and fold the stream; nothing cached) of the sampled orders."""
    await verify_orders(app, sample[:50])
    loader = CommandHandler(app.backend.events, app.codec, cache_size=0)
    ids = iter([stream_id(w.order_id(i)) for i in sample])
    return await timed(lambda: loader.load(order_decider, next(ids)), len(sample))


async def query_latencies(app: OrdersApp, orders: int, count: int) -> dict[str, list[float]]:
    """Microseconds per query on the built read model, for each of the five seed queries."""
    q = app.queries
    customers = max(1, orders // w.ORDERS_PER_CUSTOMER)
    order_ids = iter(w.order_id((k * 7919) % orders) for k in range(count))
    customer_ids = iter(f"c{(k * 31) % customers:06d}" for k in range(count))
    page = await q.orders_by_customer("c000000", limit=PAGE)
    check(len(page.orders) == min(PAGE, w.ORDERS_PER_CUSTOMER, orders), "orders_by_customer")
    page = await q.orders_by_status("submitted", limit=PAGE)
    check(len(page.orders) == min(PAGE, orders), "orders_by_status")
    return {
        "get_order": await timed(lambda: q.get_order(next(order_ids)), count),
        "orders_by_customer": await timed(
            lambda: q.orders_by_customer(next(customer_ids), limit=PAGE), count
        ),
        "orders_by_status": await timed(lambda: q.orders_by_status("submitted", limit=PAGE), count),
        "daily_stats": await timed(q.daily_stats, count),
        "dashboard_stats": await timed(q.dashboard_stats, count),
    }
