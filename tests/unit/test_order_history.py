"""The change of 2026-12: items are added several at a time (``AddItems`` → ``ItemsAdded``).

Until release 648275e one item was added per command and per event (``AddItem`` →
``ItemAdded {order_id, item}``). Those events stay in the store as they were written and read
as ``ItemsAdded`` with one item; an idempotency key an old client sent with ``AddItem`` still
replays when the same request comes back as a one-item ``AddItems``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cqrskit import (
    CommandHandler,
    EventCodec,
    IdempotencyKeyReused,
    InvalidCommand,
    NewEvent,
    UndecodableEvent,
)
from cqrskit.commands import fingerprint
from cqrskit.ids import uuid7
from cqrskit.memory import InMemoryEventStore
from cqrskit.store import IdempotencyRecord
from cqrskit.testing import DeciderSpec, UpcasterSpec
from orders.app import register_commands
from orders.domain import (
    EVENT_TYPES,
    MAX_ITEMS,
    UPCASTERS,
    AddItems,
    CreateOrder,
    ItemsAdded,
    LineItem,
    OrderCreated,
    OrderState,
    OrderSubmitted,
    SubmitOrder,
    order_decider,
    stream_id,
)

spec = DeciderSpec(order_decider)
upcasting = UpcasterSpec(EventCodec(EVENT_TYPES, upcasters=UPCASTERS))
BEANS = LineItem(name="Café crème", price=Decimal("18.50"), quantity=3)
PEN = LineItem(name="Pen", price=Decimal("1.25"), quantity=6)
CREATED = OrderCreated(order_id="ORD-1", customer_id="CUST-1", items=())

#: fingerprint(AddItem(order_id="ORD-1", item=BEANS)) as release 648275e computed it
OLD_ADD_ITEM_FINGERPRINT = "e82c64e66dc25b5a396d09ce65fbec974c7a400c3de40f80c4f1eb4600fa0f7f"


def test_given_a_draft_when_several_items_are_added_then_one_event_holds_them_all() -> None:
    spec.given(CREATED).when(AddItems(order_id="ORD-1", items=(BEANS, PEN))).then(
        ItemsAdded(order_id="ORD-1", items=(BEANS, PEN))
    )


def test_given_several_items_added_then_the_state_counts_each_and_totals_exactly() -> None:
    spec.given(CREATED, ItemsAdded(order_id="ORD-1", items=(BEANS, PEN))).when(
        SubmitOrder(order_id="ORD-1")
    ).then_state(OrderState(status="submitted", item_count=2, total=Decimal("63.00")))


@pytest.mark.parametrize(
    ("items", "message"),
    [((), "at least one item"), ((PEN,) * (MAX_ITEMS + 1), f"at most {MAX_ITEMS} items")],
)
def test_when_no_items_or_too_many_are_added_then_the_command_is_invalid(
    items: tuple[LineItem, ...], message: str
) -> None:
    with pytest.raises(InvalidCommand, match=message):
        AddItems(order_id="ORD-1", items=items)


def test_given_an_item_added_event_of_648275e_then_it_reads_as_items_added_with_that_item() -> None:
    stored = old_item_added("ORD-1", OLD_BEANS).data
    upcasting.given_stored("ItemAdded", 1, stored).then(
        ItemsAdded(order_id="ORD-1", items=(BEANS,))
    )


def test_given_an_item_added_event_without_its_item_then_reading_it_says_why_it_cannot() -> None:
    error = upcasting.given_stored("ItemAdded", 1, {"order_id": "ORD-1"}).then_raises(
        UndecodableEvent
    )
    assert "ItemAdded v1" in str(error)
    assert "KeyError" in error.reason


def test_a_one_item_add_items_answers_to_the_fingerprint_648275e_stored_for_add_item() -> None:
    command = AddItems(order_id="ORD-1", items=(BEANS,))
    forms = command.earlier_forms()
    assert [name for name, _ in forms] == ["AddItem"]
    assert fingerprint(command) != OLD_ADD_ITEM_FINGERPRINT  # the command did change shape
    assert AddItems(order_id="ORD-1", items=(BEANS, PEN)).earlier_forms() == ()


async def test_given_a_key_stored_by_648275e_for_add_item_when_retried_then_it_replays() -> None:
    store = InMemoryEventStore()
    handler = CommandHandler(store, EventCodec(EVENT_TYPES, upcasters=UPCASTERS))
    register_commands(handler)
    await handler.handle(CreateOrder(order_id="ORD-1", customer_id="CUST-1"))
    # What 648275e wrote for `POST /orders/ORD-1/items` under key "k-1": its event and its key.
    written = await store.append(
        stream_id("ORD-1"),
        [old_item_added("ORD-1", OLD_BEANS)],
        1,
        idempotency=IdempotencyRecord(key="k-1", fingerprint=OLD_ADD_ITEM_FINGERPRINT),
    )

    retried = await handler.handle(
        AddItems(order_id="ORD-1", items=(BEANS,)), idempotency_key="k-1"
    )

    assert retried.replayed
    assert (retried.version, retried.position) == (written.version, written.position)
    assert await store.stream_version(stream_id("ORD-1")) == 2
    for other in ((PEN,), (BEANS, PEN)):
        with pytest.raises(IdempotencyKeyReused):
            await handler.handle(AddItems(order_id="ORD-1", items=other), idempotency_key="k-1")


async def test_given_an_old_item_added_in_the_stream_when_submitting_then_the_rules_count_it() -> (
    None
):
    store = InMemoryEventStore()
    created = OrderCreated(order_id="ORD-1", customer_id="CUST-1", items=())
    codec = EventCodec(EVENT_TYPES, upcasters=UPCASTERS)
    await store.append(
        stream_id("ORD-1"), [codec.new_event(created), old_item_added("ORD-1", OLD_BEANS)], 0
    )
    handler = CommandHandler(store, codec)
    register_commands(handler)

    submitted = await handler.handle(SubmitOrder(order_id="ORD-1"))  # empty orders are refused

    assert submitted.events == (OrderSubmitted(order_id="ORD-1"),)
    version, state = await handler.load(order_decider, stream_id("ORD-1"))
    assert (version, state) == (
        3,
        OrderState(status="submitted", item_count=1, total=Decimal("55.50")),
    )


OLD_BEANS = b'{"name":"Caf\xc3\xa9 cr\xc3\xa8me","price":"18.50","quantity":3}'


def old_item_added(order_id: str, item: bytes) -> NewEvent:
    """An ``ItemAdded`` event as release 648275e encoded it."""
    return NewEvent(
        event_id=uuid7(),
        event_type="ItemAdded",
        schema_version=1,
        data=b'{"order_id":"' + order_id.encode() + b'","item":' + item + b"}",
        metadata=b"{}",
        recorded_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
    )
