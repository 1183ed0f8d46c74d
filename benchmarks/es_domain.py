"""The Orders workload written the way the `eventsourcing` library (9.5) documents it.

An :class:`Order` aggregate (``@event`` methods, one event per command) and an
:class:`OrdersApplication` whose command methods load the order from the store (no aggregate
cache) and save it. Persistence is chosen by the environment (``PERSISTENCE_MODULE``), as the
library intends.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.workload import Item

ItemDict = dict[str, Any]


class OrderRuleBroken(Exception):
    """A command the order's rules refuse."""


def item_dict(item: Item) -> ItemDict:
    return {"name": item.name, "price": item.price, "quantity": item.quantity}


class Order(Aggregate):
    """An order: created with items, more items added, then submitted."""

    @staticmethod
    def create_id(order_id: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE_URL, f"/orders/{order_id}")

    @event("Created")
    def __init__(self, order_id: str, customer_id: str, items: list[ItemDict]) -> None:
        self.order_id = order_id
        self.customer_id = customer_id
        self.items = list(items)
        self.status = "draft"

    @property
    def total(self) -> Decimal:
        return sum(
            (Decimal(item["price"]) * item["quantity"] for item in self.items), Decimal("0.00")
        )

    def add_item(self, item: ItemDict) -> None:
        if self.status == "submitted":
            raise OrderRuleBroken(f"order {self.order_id} is submitted")
        self._item_added(item)

    @event("ItemAdded")
    def _item_added(self, item: ItemDict) -> None:
        self.items.append(item)

    def submit(self) -> None:
        if self.status == "submitted":
            raise OrderRuleBroken(f"order {self.order_id} is already submitted")
        if not self.items:
            raise OrderRuleBroken(f"order {self.order_id} has no items")
        self._submitted()

    @event("Submitted")
    def _submitted(self) -> None:
        self.status = "submitted"


class OrdersApplication(Application[UUID]):
    """Command methods return the notification id (global position) of the last event."""

    name = "Orders"

    def create_order(self, order_id: str, customer_id: str, items: list[ItemDict]) -> int:
        order = Order(order_id=order_id, customer_id=customer_id, items=items)
        return self._save(order)

    def add_item(self, order_id: str, item: ItemDict) -> int:
        order: Order = self.repository.get(Order.create_id(order_id))
        order.add_item(item)
        return self._save(order)

    def submit_order(self, order_id: str) -> int:
        order: Order = self.repository.get(Order.create_id(order_id))
        order.submit()
        return self._save(order)

    def get_order(self, order_id: str) -> Order:
        order: Order = self.repository.get(Order.create_id(order_id))
        return order

    def _save(self, order: Order) -> int:
        recordings = self.save(order)
        return recordings[-1].notification.id
