"""The Orders domain: commands, events, rules. Pure: no I/O, no clock, no framework drivers."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

import msgspec

from cqrskit import Command, Decider, DomainError, Event, InvalidCommand, Upcaster

__all__ = [
    "EVENT_TYPES",
    "INITIAL",
    "MAX_ITEMS",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MAX_TEXT",
    "STATE_VERSION",
    "UPCASTERS",
    "AddItems",
    "CannotModifySubmittedOrder",
    "CannotSubmitEmptyOrder",
    "CreateOrder",
    "ItemsAdded",
    "LineItem",
    "OrderAlreadyExists",
    "OrderAlreadySubmitted",
    "OrderCommand",
    "OrderCreated",
    "OrderEvent",
    "OrderState",
    "OrderSubmitted",
    "Status",
    "SubmitOrder",
    "check_item",
    "check_price",
    "decide",
    "evolve",
    "order_decider",
    "stream_id",
]

MAX_PRICE = Decimal("1000000.00")
MAX_QUANTITY = 1_000_000
MAX_TEXT = 200
#: the most items one command may carry
MAX_ITEMS = 100
_CENT = Decimal("0.01")

Status = Literal["draft", "submitted"]


# -- values -------------------------------------------------------------------------------------


class LineItem(msgspec.Struct, frozen=True, kw_only=True):
    """An item of an order: a name, an exact unit price and a positive quantity.

    Commands check items (:func:`check_item`); events hold them as recorded, unchecked, so
    that a rule changed later never makes history unreadable.
    """

    name: str
    price: Decimal
    quantity: int

    @property
    def amount(self) -> Decimal:
        """Price times quantity."""
        return self.price * self.quantity


def check_item(item: LineItem) -> None:
    """Raise :class:`InvalidCommand` unless ``item`` is a valid line of an order."""
    _check_text("item name", item.name)
    check_price(item.price)
    quantity = item.quantity
    if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
        raise InvalidCommand(
            f"quantity must be a whole number from 1 to {MAX_QUANTITY}, got {quantity!r}"
        )


def check_price(price: object) -> None:
    """Raise :class:`InvalidCommand` unless ``price`` is an exact amount of whole cents."""
    if not isinstance(price, Decimal):
        raise InvalidCommand(f"price must be an exact decimal, not {type(price).__name__}")
    if not price.is_finite() or price < 0 or price > MAX_PRICE:
        raise InvalidCommand(f"price must be from 0 to {MAX_PRICE}, got {price}")
    if price != price.quantize(_CENT):
        raise InvalidCommand(f"price must have at most two decimal places, got {price}")


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(f"{what} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidCommand(f"{what} must be at most {MAX_TEXT} characters")


# -- commands -----------------------------------------------------------------------------------


def _check_items(items: tuple[LineItem, ...]) -> None:
    if len(items) > MAX_ITEMS:
        raise InvalidCommand(f"at most {MAX_ITEMS} items at once, got {len(items)}")
    for item in items:
        check_item(item)


class CreateOrder(Command, frozen=True, kw_only=True):
    order_id: str
    customer_id: str
    items: tuple[LineItem, ...] = ()

    def __post_init__(self) -> None:
        _check_text("order id", self.order_id)
        _check_text("customer id", self.customer_id)
        _check_items(self.items)


class _AddItemBefore(msgspec.Struct, frozen=True, kw_only=True):
    """The single-item ``AddItem`` command of releases up to 648275e (for fingerprints)."""

    order_id: str
    item: LineItem


class AddItems(Command, frozen=True, kw_only=True):
    """Add one or more items to a draft order, in one event."""

    order_id: str
    items: tuple[LineItem, ...]

    def __post_init__(self) -> None:
        _check_text("order id", self.order_id)
        if not self.items:
            raise InvalidCommand("give at least one item to add")
        _check_items(self.items)

    def earlier_forms(self) -> Sequence[tuple[str, msgspec.Struct]]:
        # Until 648275e one item was added by `AddItem`: a key its clients sent is retried
        # as a one-item AddItems and must still replay.
        if len(self.items) != 1:
            return ()
        return (("AddItem", _AddItemBefore(order_id=self.order_id, item=self.items[0])),)


class SubmitOrder(Command, frozen=True, kw_only=True):
    order_id: str

    def __post_init__(self) -> None:
        _check_text("order id", self.order_id)


OrderCommand = CreateOrder | AddItems | SubmitOrder


# -- events -------------------------------------------------------------------------------------


class OrderCreated(Event, frozen=True, kw_only=True):
    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]


class ItemsAdded(Event, frozen=True, kw_only=True):
    order_id: str
    items: tuple[LineItem, ...]


class OrderSubmitted(Event, frozen=True, kw_only=True):
    order_id: str


OrderEvent = OrderCreated | ItemsAdded | OrderSubmitted
EVENT_TYPES: tuple[type[Event], ...] = (OrderCreated, ItemsAdded, OrderSubmitted)


# -- history: events as earlier releases stored them -------------------------------------------


def _one_item_to_many(data: dict[str, object]) -> dict[str, object]:
    return {"order_id": data["order_id"], "items": [data["item"]]}


#: Until 648275e an order's items were added one per event, ``ItemAdded {order_id, item}``;
#: those events read as ``ItemsAdded`` with one item.
UPCASTERS: tuple[Upcaster, ...] = (
    Upcaster("ItemAdded", 1, to_type="ItemsAdded", transform=_one_item_to_many),
)


# -- rules --------------------------------------------------------------------------------------


class OrderAlreadyExists(DomainError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} already exists")


class OrderAlreadySubmitted(DomainError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} is already submitted")


class CannotModifySubmittedOrder(DomainError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} is submitted and can no longer be changed")


class CannotSubmitEmptyOrder(DomainError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} has no items and cannot be submitted")


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules need to know of an order (not what the read side shows)."""

    status: Status | None = None
    item_count: int = 0
    total: Decimal = Decimal("0.00")


INITIAL = OrderState()
#: Bump when what :func:`evolve` makes of the events changes while OrderState's fields stay
#: the same: snapshots taken before are then not used (a change of fields is noticed anyway).
STATE_VERSION = 1


def decide(command: OrderCommand, state: OrderState) -> Sequence[OrderEvent]:
    match command:
        case CreateOrder(order_id=order_id, customer_id=customer_id, items=items):
            if state.status is not None:
                raise OrderAlreadyExists(order_id)
            return [OrderCreated(order_id=order_id, customer_id=customer_id, items=items)]
        case AddItems(order_id=order_id, items=items):
            if state.status == "submitted":
                raise CannotModifySubmittedOrder(order_id)
            return [ItemsAdded(order_id=order_id, items=items)]
        case SubmitOrder(order_id=order_id):
            if state.status == "submitted":
                raise OrderAlreadySubmitted(order_id)
            if state.item_count == 0:
                raise CannotSubmitEmptyOrder(order_id)
            return [OrderSubmitted(order_id=order_id)]
    raise TypeError(f"not an order command: {command!r}")  # pragma: no cover


def evolve(state: OrderState, event: OrderEvent) -> OrderState:
    match event:
        case OrderCreated(items=items):
            return OrderState(
                status="draft",
                item_count=len(items),
                total=sum((item.amount for item in items), Decimal("0.00")),
            )
        case ItemsAdded(items=items):
            return OrderState(
                status=state.status,
                item_count=state.item_count + len(items),
                total=sum((item.amount for item in items), state.total),
            )
        case OrderSubmitted():
            return OrderState(status="submitted", item_count=state.item_count, total=state.total)
    return state  # pragma: no cover


order_decider: Decider[OrderCommand, OrderEvent, OrderState] = Decider(
    decide=decide, evolve=evolve, initial_state=INITIAL
)


def stream_id(order_id: str) -> str:
    """The event stream of an order."""
    return f"order-{order_id}"
