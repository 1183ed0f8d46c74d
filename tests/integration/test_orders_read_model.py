"""The Orders read side on every backend: the demo's figures, live projections, rebuilds."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from orders.app import OrdersApp, Settings, build_app
from orders.demo import play_demo
from orders.domain import AddItems, CreateOrder, LineItem, SubmitOrder
from orders.queries import OrderPage, OrderView
from tests.support.backends import BACKEND_NAMES
from tests.support.orders import fill_orders, full_replay, snapshot
from tests.support.postgres import fresh_url
from tests.support.waiting import DEADLINE


@pytest.fixture(params=BACKEND_NAMES)
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OrdersApp]:
    url = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'orders.db'}",
        "postgres": lambda: fresh_url(request),
    }[request.param]()
    orders_app = await build_app(Settings(db_url=url))
    try:
        yield orders_app
    finally:
        await orders_app.close()


async def test_the_demo_figures_through_the_query_api(app: OrdersApp) -> None:
    await play_demo(app, Console(file=io.StringIO()))
    queries = app.queries
    order = await queries.get_order("ORD-001")
    assert order is not None
    assert (order.total, order.status, order.item_count) == (Decimal("1176.00"), "submitted", 3)
    assert order.submitted_at is not None
    assert order.created_at <= order.submitted_at
    by_customer = await queries.orders_by_customer("CUST-123")
    assert [o.order_id for o in by_customer.orders] == ["ORD-001", "ORD-002"]
    drafts = await queries.orders_by_status("draft")
    assert [o.order_id for o in drafts.orders] == ["ORD-002"]
    submitted = await queries.orders_by_status("submitted")
    assert [o.order_id for o in submitted.orders] == ["ORD-001"]
    stats = await queries.dashboard_stats()
    assert (stats.total_orders, stats.draft_orders, stats.submitted_orders) == (2, 1, 1)
    assert (stats.total_revenue, stats.average_order_value) == (
        Decimal("1575.00"),
        Decimal("787.50"),
    )
    [day] = await queries.daily_stats()
    assert (day.count, day.revenue) == (1, Decimal("1176.00"))
    assert day.date == order.submitted_at.date().isoformat()


async def test_live_projections_equal_a_rebuild_and_a_full_replay(app: OrdersApp) -> None:
    app.start_projections()
    prefix = uuid.uuid4().hex[:8]
    await fill_orders(app, 120, prefix=prefix)
    head = await app.backend.events.head_position()
    assert await app.wait_for_position(head, timeout=30)
    live = await snapshot(app.backend.read)
    assert len(live["orders"]) == 120
    assert await full_replay(app.backend.events) == live
    await app.stop_projections()
    await app.rebuild()
    assert await snapshot(app.backend.read) == live


async def test_pages_walk_every_order_once(app: OrdersApp) -> None:
    await fill_orders(app, 57, prefix=uuid.uuid4().hex[:8])
    await app.catch_up()
    seen: list[str] = []
    cursor = None
    while True:
        page = await app.queries.orders_by_status("draft", limit=10, cursor=cursor)
        seen.extend(order.order_id for order in page.orders)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 28  # every odd-numbered order stays a draft


async def _walk_while_writing(
    app: OrdersApp,
    walk: Callable[[str | None], Awaitable[OrderPage]],
    write: Callable[[], Awaitable[int]],
) -> list[OrderView]:
    """Every page of ``walk``; before each next page, ``write()`` changes the read model and
    the walk waits until the projections have applied it."""
    seen: list[OrderView] = []
    cursor: str | None = None
    while True:
        page = await walk(cursor)
        seen.extend(page.orders)
        cursor = page.next_cursor
        if cursor is None:
            return seen
        assert await app.wait_for_position(await write(), timeout=DEADLINE)


def _assert_walked(seen: list[OrderView], expected: list[str]) -> None:
    """No order twice, every expected one (in creation order), the whole walk in key order."""
    ids = [order.order_id for order in seen]
    assert len(ids) == len(set(ids)), "an order was repeated"
    wanted = set(expected)
    assert [i for i in ids if i in wanted] == expected, "an order that existed was skipped"
    keys = [(order.created_at, order.order_id) for order in seen]
    assert keys == sorted(keys)


async def test_pages_never_repeat_or_skip_while_orders_change_during_the_walk(
    app: OrdersApp,
) -> None:
    app.start_projections()
    customer, prefix = f"C-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    pen = LineItem(name="Pen", price=Decimal("1.25"), quantity=1)
    existing = [f"{prefix}-{n:02d}" for n in range(60)]
    for order_id in existing:
        await app.commands.handle(
            CreateOrder(order_id=order_id, customer_id=customer, items=(pen,))
        )
    untouched = iter(existing)
    submitted: list[str] = []
    created: list[str] = []

    async def write() -> int:
        # one order changes (its row is rewritten), one leaves the drafts, a new one arrives
        changed = await app.commands.handle(AddItems(order_id=next(untouched), items=(pen,)))
        submitted.append(next(untouched))
        await app.commands.handle(SubmitOrder(order_id=submitted[-1]))
        created.append(f"{prefix}-new-{len(created):02d}")
        new = await app.commands.handle(
            CreateOrder(order_id=created[-1], customer_id=customer, items=(pen,))
        )
        return max(changed.position, new.position)

    assert await app.wait_for_position(await app.backend.events.head_position(), DEADLINE)
    by_customer = await _walk_while_writing(
        app, lambda cursor: app.queries.orders_by_customer(customer, limit=6, cursor=cursor), write
    )
    assert submitted, "nothing changed during the walk"
    _assert_walked(by_customer, existing)

    drafts_at_start = [o for o in existing if o not in submitted] + created
    submitted.clear()
    drafts = await _walk_while_writing(
        app, lambda cursor: app.queries.orders_by_status("draft", limit=5, cursor=cursor), write
    )
    assert submitted, "nothing changed during the walk"
    _assert_walked(drafts, [o for o in drafts_at_start if o not in submitted])
