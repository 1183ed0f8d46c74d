"""Command handling under concurrency: no refusal from stale cached state, commands for one
stream take turns inside a handler, conflicts between handlers are retried, boundedly."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from cqrskit import CommandHandler, ConcurrencyError, EventCodec
from cqrskit.memory import InMemoryEventStore
from orders.app import register_commands
from orders.domain import (
    EVENT_TYPES,
    AddItems,
    CannotModifySubmittedOrder,
    CannotSubmitEmptyOrder,
    CreateOrder,
    LineItem,
    SubmitOrder,
    order_decider,
    stream_id,
)
from tests.support.flaky import FlakyEventStore

CODEC = EventCodec(EVENT_TYPES)
PEN = LineItem(name="Pen", price=Decimal("1.50"), quantity=1)


def handler_on(store: object, **options: object) -> CommandHandler:
    handler = CommandHandler(store, CODEC, **options)  # type: ignore[arg-type]
    register_commands(handler)
    return handler


async def test_a_refusal_from_a_stale_cache_is_checked_against_the_store_first() -> None:
    store = InMemoryEventStore()
    first, second = handler_on(store), handler_on(store)
    await first.handle(CreateOrder(order_id="O-1", customer_id="C"))  # cached: no items
    await second.handle(AddItems(order_id="O-1", items=(PEN,)))

    submitted = await first.handle(SubmitOrder(order_id="O-1"))

    assert submitted.version == 3
    assert [e.event_type for e in await store.read_stream(stream_id("O-1"))][-1] == (
        "OrderSubmitted"
    )


async def test_a_refusal_that_the_stored_stream_confirms_is_raised() -> None:
    store = InMemoryEventStore()
    first, second = handler_on(store), handler_on(store)
    await first.handle(CreateOrder(order_id="O-2", customer_id="C", items=(PEN,)))
    await second.handle(SubmitOrder(order_id="O-2"))  # first's cache: a draft

    with pytest.raises(CannotModifySubmittedOrder):
        await first.handle(AddItems(order_id="O-2", items=(PEN,)))
    await first.handle(CreateOrder(order_id="O-3", customer_id="C"))
    with pytest.raises(CannotSubmitEmptyOrder):
        await first.handle(SubmitOrder(order_id="O-3"))
    assert await store.stream_version(stream_id("O-2")) == 2
    assert await store.stream_version(stream_id("O-3")) == 1


async def test_commands_for_one_stream_take_turns_and_never_conflict_in_one_handler() -> None:
    store = FlakyEventStore(InMemoryEventStore())
    inner_append = store.inner.append

    async def slow_append(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(0)  # let every other command reach its append first
        return await inner_append(*args, **kwargs)  # type: ignore[arg-type]

    store.inner.append = slow_append  # type: ignore[method-assign]
    handler = handler_on(store, max_retries=0)
    await handler.handle(CreateOrder(order_id="HOT", customer_id="C"))

    results = await asyncio.gather(
        *(handler.handle(AddItems(order_id="HOT", items=(PEN,))) for _ in range(32))
    )

    assert sorted(r.version for r in results) == list(range(2, 34))
    assert handler.retries == 0
    _, state = await handler.load(order_decider, stream_id("HOT"))
    assert state.item_count == 32
    assert state.total == Decimal("48.00")


async def test_conflicts_between_two_handlers_are_retried_until_every_command_lands() -> None:
    store = InMemoryEventStore()
    first, second = handler_on(store), handler_on(store)
    await first.handle(CreateOrder(order_id="HOT2", customer_id="C"))
    await second.handle(AddItems(order_id="HOT2", items=(PEN,)))  # both have it cached now

    await asyncio.gather(
        *(
            handler.handle(AddItems(order_id="HOT2", items=(PEN,)))
            for _ in range(16)
            for handler in (first, second)
        )
    )

    assert await store.stream_version(stream_id("HOT2")) == 34
    assert first.retries + second.retries > 0  # they did collide


async def test_a_conflict_that_never_clears_gives_up_within_the_retry_time() -> None:
    store = FlakyEventStore(InMemoryEventStore())
    handler = handler_on(store, max_retries=1_000_000, retry_time=0.2)
    await handler.handle(CreateOrder(order_id="O-9", customer_id="C"))
    store.only, store.failure = {"append"}, ConcurrencyError("order-O-9", 1, 2)

    with pytest.raises(ConcurrencyError):
        await handler.handle(AddItems(order_id="O-9", items=(PEN,)))

    assert 1 < handler.retries < 1_000_000  # it retried, and the time limit ended it
