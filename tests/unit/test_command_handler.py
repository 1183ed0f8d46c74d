"""Command handling through the public API, on the in-memory twin."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cqrskit import (
    Command,
    CommandHandler,
    ConcurrencyError,
    EventCodec,
    IdempotencyKeyReused,
    StreamNotFound,
    UnknownCommand,
)
from cqrskit.memory import InMemoryEventStore
from cqrskit.store import IdempotentResult
from orders.app import register_commands
from orders.domain import (
    EVENT_TYPES,
    AddItems,
    CannotModifySubmittedOrder,
    CreateOrder,
    ItemsAdded,
    LineItem,
    SubmitOrder,
    stream_id,
)

MOUSE = LineItem(name="Mouse", price=Decimal("49.00"), quantity=2)
codec = EventCodec(EVENT_TYPES)


def make_handler(store: InMemoryEventStore, max_retries: int = 3) -> CommandHandler:
    handler = CommandHandler(store, codec, max_retries=max_retries)
    register_commands(handler)
    return handler


class Unrouted(Command, frozen=True):
    pass


async def test_an_unknown_command_type_is_refused() -> None:
    with pytest.raises(UnknownCommand, match="Unrouted"):
        await make_handler(InMemoryEventStore()).handle(Unrouted())


async def test_a_command_on_a_missing_stream_is_refused_and_writes_nothing() -> None:
    store = InMemoryEventStore()
    with pytest.raises(StreamNotFound, match="order-NOPE"):
        await make_handler(store).handle(SubmitOrder(order_id="NOPE"))
    assert await store.head_position() == 0


async def test_a_rule_violation_writes_nothing() -> None:
    store = InMemoryEventStore()
    handler = make_handler(store)
    await handler.handle(CreateOrder(order_id="A", customer_id="C", items=(MOUSE,)))
    await handler.handle(SubmitOrder(order_id="A"))
    with pytest.raises(CannotModifySubmittedOrder):
        await handler.handle(AddItems(order_id="A", items=(MOUSE,)))
    assert await store.stream_version(stream_id("A")) == 2


async def test_a_stale_cached_state_is_refreshed_on_conflict_and_the_rule_rechecked() -> None:
    store = InMemoryEventStore()
    first, second = make_handler(store), make_handler(store)
    await first.handle(CreateOrder(order_id="A", customer_id="C", items=(MOUSE,)))
    await second.handle(AddItems(order_id="A", items=(MOUSE,)))  # second now caches version 2
    await first.handle(SubmitOrder(order_id="A"))  # first's cache was at 1: retried at 2
    assert first.retries == 1
    with pytest.raises(CannotModifySubmittedOrder):  # second's cache is stale (2, draft)
        await second.handle(AddItems(order_id="A", items=(MOUSE,)))
    assert second.retries == 1
    assert await store.stream_version(stream_id("A")) == 3


async def test_conflicts_beyond_the_retry_budget_raise_concurrency_error() -> None:
    store = InMemoryEventStore()
    handler = make_handler(store, max_retries=2)
    await handler.handle(CreateOrder(order_id="A", customer_id="C", items=(MOUSE,)))
    original_append = store.append

    async def always_behind(*args: object, **kwargs: object) -> object:
        await original_append(
            stream_id("A"), [codec.new_event(ItemsAdded(order_id="A", items=(MOUSE,)))], None
        )
        return await original_append(*args, **kwargs)  # type: ignore[arg-type]

    store.append = always_behind  # type: ignore[method-assign]
    with pytest.raises(ConcurrencyError):
        await handler.handle(AddItems(order_id="A", items=(MOUSE,)))
    assert handler.retries == 2


async def test_an_idempotency_key_replays_the_first_outcome_without_appending() -> None:
    store = InMemoryEventStore()
    handler = make_handler(store)
    command = CreateOrder(order_id="A", customer_id="C", items=(MOUSE,))
    first = await handler.handle(command, idempotency_key="key-1")
    again = await handler.handle(command, idempotency_key="key-1")
    assert again.replayed
    assert not first.replayed
    assert (again.stream_id, again.version, again.position) == (
        first.stream_id,
        first.version,
        first.position,
    )
    assert await store.head_position() == 1


async def test_an_idempotency_key_reused_for_another_command_is_refused() -> None:
    store = InMemoryEventStore()
    handler = make_handler(store)
    await handler.handle(CreateOrder(order_id="A", customer_id="C"), idempotency_key="key-1")
    with pytest.raises(IdempotencyKeyReused):
        await handler.handle(CreateOrder(order_id="B", customer_id="C"), idempotency_key="key-1")
    assert await store.head_position() == 1


async def test_events_carry_the_handlers_clock_and_metadata() -> None:
    from datetime import UTC, datetime

    from cqrskit import Metadata

    moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    store = InMemoryEventStore()
    handler = CommandHandler(store, codec, clock=lambda: moment)
    register_commands(handler)
    meta = Metadata(correlation_id="corr-1", causation_id="cause-1")
    await handler.handle(CreateOrder(order_id="A", customer_id="C"), metadata=meta)
    [recorded] = await store.read_all()
    assert recorded.recorded_at == moment
    assert recorded.meta == meta


async def test_concurrent_retries_with_one_idempotency_key_all_get_the_first_outcome() -> None:
    import asyncio

    looked_up, first_look_ups = asyncio.Barrier(5), 0

    class YieldingStore(InMemoryEventStore):
        """Lets every request look up the key before any of them appends."""

        async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
            nonlocal first_look_ups
            found = await super().find_idempotent_result(key)
            if first_look_ups < 5:  # each request's first look-up (later ones pass)
                first_look_ups += 1
                await looked_up.wait()
            return found

    store = YieldingStore()
    handlers = [make_handler(store) for _ in range(5)]  # separate caches, as separate processes
    command = CreateOrder(order_id="A", customer_id="C", items=(MOUSE,))
    results = await asyncio.gather(*(h.handle(command, idempotency_key="k") for h in handlers))
    assert sum(not result.replayed for result in results) == 1
    assert {(r.stream_id, r.version, r.position) for r in results} == {("order-A", 1, 1)}
    assert await store.head_position() == 1
