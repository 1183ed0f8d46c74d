"""A read model belongs to the event store it was built from: refused otherwise."""

from __future__ import annotations

import pytest

from cqrskit import EventCodec, ReadModelMismatch
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from cqrskit.supervision import verify_read_model
from orders.domain import EVENT_TYPES, OrderCreated

CODEC = EventCodec(EVENT_TYPES)


async def append_orders(store: InMemoryEventStore, count: int) -> int:
    for n in range(count):
        event = CODEC.new_event(OrderCreated(order_id=f"O-{n}", customer_id="C", items=()))
        await store.append(f"order-O-{n}", [event], 0)
    return await store.head_position()


async def test_a_new_read_model_is_recorded_as_built_from_the_store_that_feeds_it() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()

    await verify_read_model(events, read, ["orders"])

    assert await read.source("orders") == await events.store_id()


async def test_a_read_model_of_another_store_is_refused_with_the_remedy() -> None:
    first, second, read = InMemoryEventStore(), InMemoryEventStore(), InMemoryReadStore()
    await verify_read_model(first, read, ["orders"])

    with pytest.raises(ReadModelMismatch, match="another event store") as refused:
        await verify_read_model(second, read, ["orders"], remedy="run the rebuild")

    assert str(refused.value).endswith(": run the rebuild")
    assert refused.value.projection == "orders"


async def test_a_checkpoint_ahead_of_the_head_is_refused_even_without_a_recorded_source() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    await read.apply("orders", 0, 42, lambda view: None)  # e.g. a read model of an older release
    await append_orders(events, 3)

    with pytest.raises(ReadModelMismatch, match="ahead of the event store"):
        await verify_read_model(events, read, ["orders"])
    assert await read.source("orders") is None


async def test_a_reset_read_model_can_be_built_from_any_store_again() -> None:
    first, second, read = InMemoryEventStore(), InMemoryEventStore(), InMemoryReadStore()
    await verify_read_model(first, read, ["orders"])
    await read.reset("orders", [])

    await verify_read_model(second, read, ["orders"])

    assert await read.source("orders") == await second.store_id()
