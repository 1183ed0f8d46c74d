"""Replay determinism: any valid history, replayed, rebuilds the same state and read model."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cqrskit import CommandHandler, DomainError, EventCodec, ProjectionRunner, StreamNotFound
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from orders.app import register_commands
from orders.domain import (
    EVENT_TYPES,
    AddItems,
    CreateOrder,
    LineItem,
    OrderCommand,
    SubmitOrder,
    order_decider,
    stream_id,
)
from orders.projections import PROJECTIONS

order_ids = st.sampled_from(["A", "B", "C"])
items = st.builds(
    LineItem,
    name=st.sampled_from(["Laptop", "Mouse", "Cable"]),
    price=st.decimals(min_value=0, max_value=10_000, places=2),
    quantity=st.integers(min_value=1, max_value=50),
)
commands: st.SearchStrategy[OrderCommand] = st.one_of(
    st.builds(
        CreateOrder,
        order_id=order_ids,
        customer_id=st.sampled_from(["C1", "C2"]),
        items=st.lists(items, max_size=3).map(tuple),
    ),
    st.builds(
        AddItems, order_id=order_ids, items=st.lists(items, min_size=1, max_size=3).map(tuple)
    ),
    st.builds(SubmitOrder, order_id=order_ids),
)


class Clock:
    """Deterministic time: each reading is a minute after the last (crossing midnight)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=7)
        return self.now


async def _play(script: list[OrderCommand]) -> tuple[InMemoryEventStore, CommandHandler]:
    store = InMemoryEventStore()
    handler = CommandHandler(store, EventCodec(EVENT_TYPES), clock=Clock())
    register_commands(handler)
    for command in script:
        with contextlib.suppress(DomainError, StreamNotFound):
            await handler.handle(command)
    return store, handler


async def _read_model(store: InMemoryEventStore, batch_size: int) -> dict[str, object]:
    read = InMemoryReadStore()
    codec = EventCodec(EVENT_TYPES)
    snapshot: dict[str, object] = {}
    for projection in PROJECTIONS:
        runner = ProjectionRunner(projection, store, read, codec, batch_size=batch_size)
        await runner.setup()
        await runner.catch_up()
        for table in projection.tables:
            snapshot[table.name] = await read.find(table, order_by=table.key)
    return snapshot


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(commands, max_size=25), batch_size=st.integers(min_value=1, max_value=7))
def test_replaying_history_rebuilds_the_same_state_and_read_model(
    script: list[OrderCommand], batch_size: int
) -> None:
    async def check() -> None:
        store, handler = await _play(script)
        codec = EventCodec(EVENT_TYPES)
        for order_id in ["A", "B", "C"]:
            recorded = await store.read_stream(stream_id(order_id))
            replayed = order_decider.fold(codec.decode(r) for r in recorded)
            _, live = await handler.load(order_decider, stream_id(order_id))
            assert replayed == live
        # Whole-history rebuild in one batch equals an incremental build in small batches.
        assert await _read_model(store, 10_000) == await _read_model(store, batch_size)

    asyncio.run(check())


def test_totals_are_exact_decimals() -> None:
    async def check() -> None:
        cheap = LineItem(name="Cable", price=Decimal("0.10"), quantity=3)
        store, _ = await _play(
            [CreateOrder(order_id="A", customer_id="C1", items=(cheap, cheap, cheap))]
        )
        model = await _read_model(store, 1)
        orders = model["orders"]
        assert isinstance(orders, list)
        assert orders[0]["total_cents"] == 90

    asyncio.run(check())
