"""The Orders business rules, as given/when/then specifications."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cqrskit import InvalidCommand
from cqrskit.testing import DeciderSpec
from orders.domain import (
    AddItems,
    CannotModifySubmittedOrder,
    CannotSubmitEmptyOrder,
    CreateOrder,
    ItemsAdded,
    LineItem,
    OrderAlreadyExists,
    OrderAlreadySubmitted,
    OrderCreated,
    OrderState,
    OrderSubmitted,
    SubmitOrder,
    order_decider,
)

spec = DeciderSpec(order_decider)
LAPTOP = LineItem(name="Laptop", price=Decimal("999.00"), quantity=1)
MOUSE = LineItem(name="Mouse", price=Decimal("49.00"), quantity=2)
CREATED = OrderCreated(order_id="ORD-1", customer_id="CUST-1", items=(LAPTOP,))
EMPTY_CREATED = OrderCreated(order_id="ORD-1", customer_id="CUST-1", items=())
SUBMITTED = OrderSubmitted(order_id="ORD-1")


def test_create_order_records_the_order_with_its_items() -> None:
    spec.given().when(CreateOrder(order_id="ORD-1", customer_id="CUST-1", items=(LAPTOP,))).then(
        CREATED
    )


def test_creating_an_existing_order_is_rejected() -> None:
    spec.given(CREATED).when(
        CreateOrder(order_id="ORD-1", customer_id="CUST-2", items=())
    ).then_raises(OrderAlreadyExists)


def test_add_item_to_a_draft_order() -> None:
    spec.given(CREATED).when(AddItems(order_id="ORD-1", items=(MOUSE,))).then(
        ItemsAdded(order_id="ORD-1", items=(MOUSE,))
    )


def test_no_change_after_submit() -> None:
    spec.given(CREATED, SUBMITTED).when(AddItems(order_id="ORD-1", items=(MOUSE,))).then_raises(
        CannotModifySubmittedOrder
    )


def test_submit_a_draft_order_with_items() -> None:
    spec.given(CREATED).when(SubmitOrder(order_id="ORD-1")).then(SUBMITTED)


def test_no_double_submit() -> None:
    spec.given(CREATED, SUBMITTED).when(SubmitOrder(order_id="ORD-1")).then_raises(
        OrderAlreadySubmitted
    )


def test_no_empty_submit() -> None:
    spec.given(EMPTY_CREATED).when(SubmitOrder(order_id="ORD-1")).then_raises(
        CannotSubmitEmptyOrder
    )


def test_an_item_added_to_an_empty_order_makes_it_submittable() -> None:
    spec.given(EMPTY_CREATED, ItemsAdded(order_id="ORD-1", items=(MOUSE,))).when(
        SubmitOrder(order_id="ORD-1")
    ).then(SUBMITTED)


def test_state_tracks_status_count_and_exact_total() -> None:
    spec.given(CREATED, ItemsAdded(order_id="ORD-1", items=(MOUSE,))).when(
        SubmitOrder(order_id="ORD-1")
    ).then_state(OrderState(status="submitted", item_count=2, total=Decimal("1097.00")))


@pytest.mark.parametrize(
    ("price", "quantity", "message"),
    [
        (Decimal("-1.00"), 1, "price must be from 0"),
        (Decimal("0.001"), 1, "at most two decimal places"),
        (Decimal("NaN"), 1, "price must be from 0"),
        (Decimal("Infinity"), 1, "price must be from 0"),
        (Decimal("1000000.01"), 1, "price must be from 0"),
        (0.1, 1, "exact decimal, not float"),
        (Decimal("1.00"), 0, "quantity must be a whole number"),
        (Decimal("1.00"), -3, "quantity must be a whole number"),
        (Decimal("1.00"), 1.5, "quantity must be a whole number"),
        (Decimal("1.00"), True, "quantity must be a whole number"),
    ],
)
def test_invalid_items_are_rejected(price: object, quantity: object, message: str) -> None:
    item = LineItem(name="Thing", price=price, quantity=quantity)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand, match=message):
        AddItems(order_id="ORD-1", items=(item,))
    with pytest.raises(InvalidCommand, match=message):
        CreateOrder(order_id="ORD-1", customer_id="CUST-1", items=(item,))


@pytest.mark.parametrize(
    ("order_id", "customer_id", "item_name", "message"),
    [
        ("", "CUST-1", "Laptop", "order id must be a non-empty"),
        ("ORD-1", "  ", "Laptop", "customer id must be a non-empty"),
        ("ORD-1", "CUST-1", "", "item name must be a non-empty"),
        ("x" * 201, "CUST-1", "Laptop", "order id must be at most"),
    ],
)
def test_ids_and_names_must_be_present(
    order_id: str, customer_id: str, item_name: str, message: str
) -> None:
    item = LineItem(name=item_name, price=Decimal("1.00"), quantity=1)
    with pytest.raises(InvalidCommand, match=message):
        CreateOrder(order_id=order_id, customer_id=customer_id, items=(item,))


def test_a_free_item_is_allowed() -> None:
    free = LineItem(name="Sticker", price=Decimal("0"), quantity=3)
    spec.given(CREATED).when(AddItems(order_id="ORD-1", items=(free,))).then(
        ItemsAdded(order_id="ORD-1", items=(free,))
    )
