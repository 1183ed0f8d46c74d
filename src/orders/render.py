"""Terminal rendering of commands, events and read-model views (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import msgspec
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from cqrskit import DeadLetter, Event, RecordedEvent
from orders.money import format_amount
from orders.queries import DailyStats, DashboardStats, OrderView

__all__ = [
    "console",
    "daily_table",
    "dashboard_table",
    "dead_letters_table",
    "events_table",
    "halt_notice",
    "order_details",
    "order_table",
    "orders_table",
    "produced_events_table",
]


def _event_payload(event: Event) -> str:
    return msgspec.json.encode(event).decode()


def events_table(
    title: str,
    events: Iterable[RecordedEvent],
    read_current: Callable[[RecordedEvent], RecordedEvent | None] | None = None,
) -> Table:
    """The events as this release reads them (``read_current``), each marked with the shape
    it was stored in when that is older, or as unreadable."""
    table = Table(title=title, title_justify="left", expand=True)
    for column in ("pos", "stream", "ver", "type", "at (UTC)"):
        table.add_column(column, no_wrap=True, justify="right" if column == "ver" else "left")
    table.add_column("data", overflow="fold", ratio=1)
    for event in events:
        current = event if read_current is None else read_current(event)
        kind: Text | str
        if current is None:
            stored = f"{event.event_type} v{event.schema_version} "
            kind = Text.assemble(stored, ("(unreadable)", "red"))
            current = event
        elif (current.event_type, current.schema_version) != (
            event.event_type,
            event.schema_version,
        ):
            stored = f"(stored: {event.event_type} v{event.schema_version})"
            kind = Text.assemble(f"{current.event_type} ", (stored, "dim"))
        else:
            kind = event.event_type
        table.add_row(
            str(event.position),
            event.stream_id,
            str(event.stream_version),
            kind,
            event.recorded_at.strftime("%H:%M:%S.%f")[:-3],
            current.data.decode(),
        )
    return table


def produced_events_table(events: Sequence[Event]) -> Table:
    table = Table(show_header=True, box=None, padding=(0, 2))
    table.add_column("event", style="green")
    table.add_column("data", overflow="fold")
    for event in events:
        table.add_row(event.event_type, _event_payload(event))
    return table


def order_table(order: OrderView) -> Table:
    table = Table(title=f"Order {order.order_id}", title_justify="left")
    table.add_column("item")
    table.add_column("price", justify="right")
    table.add_column("qty", justify="right")
    table.add_column("amount", justify="right")
    for line in order.items:
        table.add_row(
            line.name,
            format_amount(line.price),
            str(line.quantity),
            format_amount(line.price * line.quantity),
        )
    table.add_section()
    quantity = sum(line.quantity for line in order.items)
    table.add_row(
        Text("total", style="bold"),
        "",
        str(quantity),
        Text(format_amount(order.total), style="bold"),
    )
    return table


def order_details(order: OrderView) -> Table:
    details = Table.grid(padding=(0, 2))
    details.add_column(style="dim")
    details.add_column()
    submitted = order.submitted_at.isoformat(timespec="seconds") if order.submitted_at else "-"
    details.add_row("customer", order.customer_id)
    details.add_row("status", order.status)
    details.add_row("items", str(order.item_count))
    details.add_row("total", format_amount(order.total))
    details.add_row("created at", order.created_at.isoformat(timespec="seconds"))
    details.add_row("submitted at", submitted)
    return details


def orders_table(title: str, orders: Iterable[OrderView]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("order", "customer", "status", "items", "total", "created at (UTC)"):
        table.add_column(column, justify="right" if column in ("items", "total") else "left")
    for order in orders:
        table.add_row(
            order.order_id,
            order.customer_id,
            order.status,
            str(order.item_count),
            format_amount(order.total),
            order.created_at.isoformat(timespec="seconds"),
        )
    return table


def dashboard_table(stats: DashboardStats) -> Table:
    table = Table(title="Dashboard stats", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("total orders", str(stats.total_orders))
    table.add_row("total revenue", format_amount(stats.total_revenue))
    table.add_row("draft orders", str(stats.draft_orders))
    table.add_row("submitted orders", str(stats.submitted_orders))
    table.add_row("average order value", format_amount(stats.average_order_value))
    return table


def daily_table(days: Iterable[DailyStats]) -> Table:
    table = Table(title="Daily stats (by UTC submit date)", title_justify="left")
    table.add_column("date")
    table.add_column("orders", justify="right")
    table.add_column("revenue", justify="right")
    for day in days:
        table.add_row(day.date, str(day.count), format_amount(day.revenue))
    return table


def console() -> Console:
    """The terminal: every string it prints is shown verbatim (no markup, no emoji codes,
    no highlighting), so stored and user text can never be read as instructions; styles are
    given as :class:`rich.text.Text` spans."""
    return Console(highlight=False, markup=False, emoji=False)


def dead_letters_table(letters: Sequence[DeadLetter]) -> Group:
    """The events the projections could not apply, oldest first, then each one's error."""
    table = Table(title="Dead letters", title_justify="left")
    for column in ("projection", "pos", "stream", "ver", "type", "status", "tries"):
        numeric = column in ("pos", "ver", "tries")
        table.add_column(column, overflow="fold", justify="right" if numeric else "left")
    errors = []
    for letter in letters:
        event = letter.event
        status = (
            Text("halted", "red")
            if letter.halted
            else Text("blocked", "yellow")
            if letter.blocked_by is not None
            else Text("parked", "yellow")
        )
        table.add_row(
            letter.projection,
            str(letter.position),
            letter.stream_id,
            str(event.stream_version),
            f"{event.event_type} v{event.schema_version}",
            status,
            str(letter.attempts),
        )
        errors.append(
            Text.assemble((f"{letter.projection} {letter.position}: ", "bold"), letter.error)
        )
    if not letters:
        table.caption = "none"
    return Group(table, *errors)


def halt_notice(letter: DeadLetter) -> Text:
    """What a halted projection stands at, and what to do."""
    event = letter.event
    return Text.assemble(
        ("halted:", "red"),
        f" {letter.projection} at position {letter.position} ({event.event_type} of "
        f"{letter.stream_id} v{event.stream_version}, {letter.attempts} attempt(s)): "
        f"{letter.error}\n",
        ("  ", ""),
        f"fix it and run `orders projections retry {letter.projection}`, or skip the event with"
        f" `orders projections discard {letter.projection}`; the traceback: "
        f"`orders projections dead-letters {letter.projection} --json`",
    )
