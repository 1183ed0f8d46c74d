"""The seed's demonstration, played against a real store and read model."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.rule import Rule

from cqrskit import Command
from orders import render
from orders.app import OrdersApp
from orders.domain import AddItems, CreateOrder, LineItem, SubmitOrder

__all__ = [
    "CUSTOMER",
    "DEMO_COMMANDS",
    "DemoNeedsEmptyStore",
    "play_demo",
]

CUSTOMER = "CUST-123"


def _item(name: str, price: str, quantity: int) -> LineItem:
    return LineItem(name=name, price=Decimal(price), quantity=quantity)


DEMO_COMMANDS: tuple[Command, ...] = (
    CreateOrder(
        order_id="ORD-001",
        customer_id=CUSTOMER,
        items=(_item("Laptop", "999.00", 1), _item("Mouse", "49.00", 2)),
    ),
    AddItems(order_id="ORD-001", items=(_item("Keyboard", "79.00", 1),)),
    SubmitOrder(order_id="ORD-001"),
    CreateOrder(order_id="ORD-002", customer_id=CUSTOMER, items=(_item("Monitor", "399.00", 1),)),
)


class DemoNeedsEmptyStore(Exception):
    """The demo plays from an empty store; this one already holds events."""


async def play_demo(app: OrdersApp, out: Console) -> None:
    """Send the seed's commands, show the events they produced, then the read side."""
    if await app.head_position():
        raise DemoNeedsEmptyStore(
            "the demo needs an empty store, and this one already holds events: "
            "use a fresh database (the default demo database is recreated on each run)"
        )
    out.print(Rule("CQRS pattern: Orders"))
    out.print(f"store: {app.settings.db_url}\n")
    out.print(Rule("Command side (writes)", style="cyan"))
    last_position = 0
    for command in DEMO_COMMANDS:
        result = await app.send(command)
        last_position = result.position
        out.print(f"[bold cyan]command[/] {command.command_type} {_describe(command)}")
        out.print(render.produced_events_table(result.events))
        out.print(f"  stream {result.stream_id} at version {result.version}\n")

    out.print(Rule("Event store (global order)", style="cyan"))
    out.print(render.events_table("All events", await app.events(0, 100), app.read_current))

    app.start_projections()
    if not await app.wait_for_position(last_position, timeout=30):
        raise TimeoutError("the projections did not catch up within 30 s")
    out.print(Rule("Query side (reads)", style="magenta"))
    queries = app.queries
    order = await queries.get_order("ORD-001")
    if order is not None:
        out.print(render.order_table(order))
        out.print(render.order_details(order))
    by_customer = await queries.orders_by_customer(CUSTOMER)
    out.print(render.orders_table(f"Orders for {CUSTOMER}", by_customer.orders))
    drafts = await queries.orders_by_status("draft")
    out.print(render.orders_table("Draft orders", drafts.orders))
    submitted = await queries.orders_by_status("submitted")
    out.print(render.orders_table("Submitted orders", submitted.orders))
    out.print(render.dashboard_table(await queries.dashboard_stats()))
    out.print(render.daily_table(await queries.daily_stats()))
    out.print("\n[bold green]Demo complete.[/]")


def _describe(command: Command) -> str:
    match command:
        case CreateOrder(order_id=order_id, customer_id=customer_id, items=items):
            lines = ", ".join(f"{i.name} {i.price} x {i.quantity}" for i in items)
            return f"{order_id} for {customer_id}: {lines}"
        case AddItems(order_id=order_id, items=items):
            return f"{order_id}: " + ", ".join(f"{i.name} {i.price} x {i.quantity}" for i in items)
        case SubmitOrder(order_id=order_id):
            return order_id
    return ""
