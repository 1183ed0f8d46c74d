"""The Orders workload both libraries run, and the totals a correct read model must hold.

Order ``i`` is created with two items, gets a third item, then is submitted: three commands,
one event each. Every value is derived from ``i`` so both sides see the same data and the
expected read model can be computed without running anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from orders.domain import AddItems, CreateOrder, LineItem, OrderCommand, SubmitOrder
from orders.money import to_cents

ORDERS_PER_CUSTOMER = 10
COMMANDS_PER_ORDER = 3


@dataclass(frozen=True)
class Item:
    """A line item as plain values (each side turns it into its own type)."""

    name: str
    price: Decimal
    quantity: int

    @property
    def cents(self) -> int:
        return to_cents(self.price) * self.quantity


def order_id(i: int, prefix: str = "o") -> str:
    return f"{prefix}{i:07d}"


def customer_id(i: int, orders: int) -> str:
    customers = max(1, orders // ORDERS_PER_CUSTOMER)
    return f"c{i % customers:06d}"


def created_items(i: int) -> tuple[Item, Item]:
    return (
        Item("widget", Decimal(f"{i % 50 + 1}.25"), 1 + i % 3),
        Item("gadget", Decimal("9.99"), 2),
    )


def added_item(i: int) -> Item:
    return Item("gizmo", Decimal(f"{i % 7}.50"), 1)


def batch_item(j: int) -> Item:
    """The ``j``-th item added to an order of the batch-append figure."""
    return Item(f"part-{j}", Decimal(f"{j % 9 + 1}.10"), 1)


def order_total_cents(i: int) -> int:
    return sum(item.cents for item in (*created_items(i), added_item(i)))


def line(item: Item) -> LineItem:
    return LineItem(name=item.name, price=item.price, quantity=item.quantity)


def commands_for(i: int, prefix: str = "o", orders: int = 1) -> list[OrderCommand]:
    """The three cqrskit commands of order ``i``."""
    oid = order_id(i, prefix)
    return [
        CreateOrder(
            order_id=oid,
            customer_id=customer_id(i, orders),
            items=tuple(line(item) for item in created_items(i)),
        ),
        AddItems(order_id=oid, items=(line(added_item(i)),)),
        SubmitOrder(order_id=oid),
    ]


@dataclass(frozen=True)
class Expected:
    """What the read model must show after orders ``range(first, first + count)`` ran."""

    orders: int
    submitted: int
    revenue_cents: int
    events: int

    @classmethod
    def for_orders(cls, count: int, first: int = 0, *, submitted: bool = True) -> Expected:
        revenue = sum(order_total_cents(i) for i in range(first, first + count))
        per_order = COMMANDS_PER_ORDER if submitted else COMMANDS_PER_ORDER - 1
        return cls(
            orders=count,
            submitted=count if submitted else 0,
            revenue_cents=revenue,
            events=count * per_order,
        )


def split(count: int, clients: int) -> Iterator[range]:
    """``range(count)`` cut into ``clients`` interleaved shares (client k takes k, k+n, ...)."""
    for k in range(clients):
        yield range(k, count, clients)
