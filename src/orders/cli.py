"""The ``orders`` command line: commands, queries, the event log, projections and the demo."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import msgspec
import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from cqrskit import (
    Command,
    ConcurrencyError,
    ConfigurationError,
    DeadLetter,
    DomainError,
    InvalidCommand,
    ProjectionHalted,
    ReadModelMismatch,
    RecordedEvent,
    StoreUnavailable,
    StreamNotFound,
    UndecodableEvent,
    UnknownEventType,
    VersionRole,
)
from cqrskit.backends import delete_backend, store_exists
from cqrskit.supervision import LAG_CAP
from cqrskit.tracing import configure_tracing
from cqrskit.urls import normalise_url, redact, scheme_of
from cqrskit.versions import ProjectionVersion
from orders import render
from orders.app import OrdersApp, RebuildOutcome, Settings
from orders.demo import DEMO_COMMANDS, DemoNeedsEmptyStore, play_demo
from orders.domain import AddItems, CreateOrder, LineItem, SubmitOrder
from orders.errors import InvalidQuery, OrderNotFound, PartitionedReadModel, UnknownProjection
from orders.logs import configure_logging
from orders.projections import PROJECTIONS
from orders.scaleout import open_app

__all__ = ["app", "main", "parse_item", "run_with_app"]

T = TypeVar("T")

EXIT_REJECTED = 1  # a business rule or a concurrency conflict refused the command
EXIT_INVALID = 2  # bad input (and typer's own usage errors)
EXIT_UNAVAILABLE = 3  # the store cannot be reached or is misconfigured

DEMO_DB = Path(".cqrskit/demo.db")
_json = msgspec.json.Encoder(decimal_format="string")

app = typer.Typer(
    help="Orders: a CQRS + event-sourcing service built on cqrskit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"orders (cqrskit {_installed_version()})")
        raise typer.Exit()


def _installed_version() -> str:
    try:
        return metadata.version("cqrskit")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Orders: a CQRS + event-sourcing service built on cqrskit."""


projections_app = typer.Typer(help="Inspect and rebuild the read-model projections.")
db_app = typer.Typer(help="The database: schema, reset, transaction ids.")
app.add_typer(projections_app, name="projections")
app.add_typer(db_app, name="db")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Store URL (sqlite:///path, a plain path, postgresql://…); "
        "default $CQRSKIT_DB or ./.cqrskit/orders.db",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NatsOption = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="NATS server with JetStream (nats://host:4222) for scale-out; "
        "default $CQRSKIT_NATS_URL",
        show_default=False,
    ),
]
StreamOption = Annotated[
    str | None,
    typer.Option(
        "--stream",
        help="JetStream stream of this deployment's events; default $CQRSKIT_NATS_STREAM or "
        "'orders'",
        show_default=False,
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    render.console().print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(code)


def run_with_app(
    db: str | None,
    work: Callable[[OrdersApp], Awaitable[T]],
    *,
    settings: Settings | None = None,
    existing: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Build the app for ``db``, run ``work`` and close; map every failure to one line + exit.

    With ``existing`` (commands that only read), a store that does not exist is an error
    rather than created: a mistyped ``--db`` creates nothing. ``loop_factory`` makes the
    event loop (asyncio's default when None).
    """

    async def main() -> T:
        chosen = settings or Settings.from_env(db_url=db)
        if existing and not await store_exists(chosen.db_url):
            raise ConfigurationError(
                f"no event store at {redact(chosen.db_url)}: check --db (or $CQRSKIT_DB);"
                " the first command that writes creates it"
            )
        # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set; spans are flushed on the way out
        with configure_tracing("orders"):
            orders_app = await open_app(chosen)
            try:
                return await work(orders_app)
            finally:
                await orders_app.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(main())
    except (
        DomainError,
        StreamNotFound,
        ConcurrencyError,
        DemoNeedsEmptyStore,
        OrderNotFound,
        ProjectionHalted,
        UndecodableEvent,  # an order's history holds an event this release cannot read
        UnknownEventType,
    ) as error:
        _fail(str(error), EXIT_REJECTED)
    except (InvalidCommand, InvalidQuery, UnknownProjection, PartitionedReadModel) as error:
        _fail(str(error), EXIT_INVALID)
    except (StoreUnavailable, ConfigurationError, ReadModelMismatch) as error:
        _fail(str(error), EXIT_UNAVAILABLE)


def _print_json(value: Any) -> None:
    typer.echo(_json.encode(value).decode())


def _warn_halts(halts: list[ProjectionHalted]) -> None:
    """A query served from a halted projection answers as of its halt: say so on stderr (so
    that ``--json`` output stays one document)."""
    for halted in halts:
        typer.echo(
            f"warning: {halted}; see `orders projections dead-letters {halted.letter.projection}`",
            err=True,
        )


def parse_item(spec: str) -> LineItem:
    """``NAME:PRICE:QUANTITY`` (e.g. ``Laptop:999.00:1``) as a line item."""
    try:
        name, price, quantity = spec.rsplit(":", 2)
        return LineItem(name=name, price=Decimal(price), quantity=int(quantity))
    except (ValueError, InvalidOperation):
        _fail(f"item {spec!r} is not NAME:PRICE:QUANTITY (e.g. Laptop:999.00:1)", EXIT_INVALID)


def _send(db: str | None, build: Callable[[], Command], as_json: bool) -> None:
    try:
        command = build()
    except InvalidCommand as error:
        _fail(str(error), EXIT_INVALID)

    async def work(orders_app: OrdersApp) -> None:
        result = await orders_app.send(command)
        if as_json:
            _print_json(
                {
                    "stream_id": result.stream_id,
                    "version": result.version,
                    "position": result.position,
                    "events": [
                        {"type": event.event_type, "data": event} for event in result.events
                    ],
                }
            )
            return
        done = f"{command.command_type} → {result.stream_id} v{result.version}"
        try:
            out = render.console()
            out.print(Text.assemble(("ok", "green"), " ", done))
            out.print(render.produced_events_table(result.events))
        except Exception as error:  # the command is written: showing it must not undo "ok"
            typer.echo(f"ok {done} (its events could not be shown: {error!r})")

    run_with_app(db, work)


@app.command("create-order")
def create_order(
    order_id: Annotated[str, typer.Argument(help="The new order's id, e.g. ORD-001.")],
    customer: Annotated[str, typer.Option("--customer", "-c", help="Customer id.")],
    item: Annotated[
        list[str] | None,
        typer.Option("--item", "-i", help="NAME:PRICE:QUANTITY, repeatable."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draft order."""
    items = tuple(parse_item(spec) for spec in item or ())
    _send(db, lambda: CreateOrder(order_id=order_id, customer_id=customer, items=items), as_json)


@app.command("add-item")
def add_item(
    order_id: str,
    name: Annotated[str | None, typer.Option("--name", help="Item name (one item).")] = None,
    price: Annotated[
        str | None, typer.Option("--price", help="Unit price, e.g. 79.00 (with --name).")
    ] = None,
    quantity: Annotated[int, typer.Option("--quantity", "-q", help="Quantity (with --name).")] = 1,
    item: Annotated[
        list[str] | None,
        typer.Option("--item", "-i", help="NAME:PRICE:QUANTITY, repeatable: several items."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add items to a draft order: one with --name/--price/--quantity, or several with --item."""
    one_item = name is not None or price is not None
    if one_item == bool(item):
        _fail("give either --name and --price (one item) or --item (repeatable)", EXIT_INVALID)
    if one_item:
        if name is None or price is None:
            _fail("--name and --price go together", EXIT_INVALID)
        try:
            unit_price = Decimal(price)
        except InvalidOperation:
            _fail(f"price {price!r} is not a decimal number", EXIT_INVALID)
        lines: tuple[LineItem, ...] = (LineItem(name=name, price=unit_price, quantity=quantity),)
    else:
        lines = tuple(parse_item(spec) for spec in item or ())
    _send(db, lambda: AddItems(order_id=order_id, items=lines), as_json)


@app.command()
def submit(order_id: str, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Submit a draft order."""
    _send(db, lambda: SubmitOrder(order_id=order_id), as_json)


@app.command("order")
def show_order(
    order_id: str,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one order from the read model."""

    async def work(orders_app: OrdersApp) -> None:
        _warn_halts(await orders_app.catch_up())
        order = await orders_app.queries.get_order(order_id)
        if order is None:
            _fail(f"order {order_id!r} not found", EXIT_REJECTED)
        if as_json:
            _print_json(order)
        else:
            out = render.console()
            out.print(render.order_table(order))
            out.print(render.order_details(order))

    run_with_app(db, work, existing=True)


@app.command("orders")
def list_orders(
    customer: Annotated[str | None, typer.Option("--customer", "-c")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="draft or submitted")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="From a previous page.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the orders, oldest first: all of them, or a customer's (--customer) and/or those
    in a status (--status)."""
    if status is not None and status not in ("draft", "submitted"):
        _fail(f"status must be draft or submitted, got {status!r}", EXIT_INVALID)

    async def work(orders_app: OrdersApp) -> None:
        _warn_halts(await orders_app.catch_up())
        page = await orders_app.queries.list_orders(
            status=status, customer_id=customer, limit=limit, cursor=cursor
        )
        title = "Orders"
        if customer is not None:
            title += f" for {customer}"
        if status is not None:
            title += f" in status {status}"
        if as_json:
            _print_json(page)
            return
        out = render.console()
        out.print(render.orders_table(title, page.orders))
        if page.next_cursor:
            out.print(f"more: --cursor {page.next_cursor}")

    run_with_app(db, work, existing=True)


@app.command()
def stats(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Dashboard and daily stats."""

    async def work(orders_app: OrdersApp) -> None:
        _warn_halts(await orders_app.catch_up())
        dashboard = await orders_app.queries.dashboard_stats()
        daily = await orders_app.queries.daily_stats()
        if as_json:
            _print_json({"dashboard": dashboard, "daily": daily})
            return
        out = render.console()
        out.print(render.dashboard_table(dashboard))
        out.print(render.daily_table(daily))

    run_with_app(db, work, existing=True)


@app.command()
def events(
    order_id: Annotated[
        str | None, typer.Argument(help="One order's stream; all if omitted.")
    ] = None,
    after: Annotated[int, typer.Option("--after", help="Global position to start after.")] = 0,
    from_version: Annotated[
        int, typer.Option("--from-version", min=1, help="With an order: its first version.")
    ] = 1,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the event log: one order's stream, or every event in global order (a page of
    --limit events; the last line says how to get the next)."""

    async def work(orders_app: OrdersApp) -> None:
        if order_id is not None:
            found = await orders_app.order_events(order_id, from_version=from_version, limit=limit)
            title = f"Events of order {order_id}"
            more = f"--from-version {found[-1].stream_version + 1}" if found else ""
        else:
            found = await orders_app.events(after, limit)
            title = "All events (global order)"
            more = f"--after {found[-1].position}" if found else ""
        hint = f"more: {more} (this page holds --limit {limit} events)"
        full = len(found) == limit
        if as_json:
            _print_json(
                [
                    {
                        "event_id": str(event.event_id),
                        "stream_id": event.stream_id,
                        "version": event.stream_version,
                        "position": event.position,
                        "type": event.event_type,
                        "schema_version": event.schema_version,
                        "recorded_at": event.recorded_at,
                        "data": msgspec.json.decode(event.data),
                        "current": _current_form(orders_app.read_current(event)),
                    }
                    for event in found
                ]
            )
            if full:
                typer.echo(hint, err=True)  # stdout stays one JSON document
            return
        out = render.console()
        out.print(render.events_table(title, found, orders_app.read_current))
        if full:
            out.print(hint)

    run_with_app(db, work, existing=True)


def _current_form(current: RecordedEvent | None) -> dict[str, Any] | None:
    if current is None:
        return None
    return {
        "type": current.event_type,
        "schema_version": current.schema_version,
        "data": msgspec.json.decode(current.data),
    }


@app.command()
def demo(db: DbOption = None) -> None:
    """Play the seed's demonstration on a fresh database (default ./.cqrskit/demo.db)."""
    settings = Settings.from_env(db_url=db)
    if db is None and "CQRSKIT_DB" not in os.environ:
        DEMO_DB.parent.mkdir(parents=True, exist_ok=True)
        for stale in DEMO_DB.parent.glob(f"{DEMO_DB.stem}.*"):
            stale.unlink()
        settings = Settings(db_url=f"sqlite:///{DEMO_DB}")
    run_with_app(
        None, lambda orders_app: play_demo(orders_app, render.console()), settings=settings
    )


@projections_app.command("status")
def projections_status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Each projection's checkpoint and how far it is behind the event store: every version
    of it (blue/green), serving, building or retired."""

    async def work(
        orders_app: OrdersApp,
    ) -> tuple[list[dict[str, Any]], str | None, list[DeadLetter], list[str]]:
        reports = await orders_app.projections()
        try:
            await orders_app.verify_read_model()
            refusal = None
        except ReadModelMismatch as error:
            refusal = str(error)
        rows = [
            {
                "projection": report.name,
                "version": report.version,
                "role": report.role.value,
                "position": report.checkpoint,
                "head": report.head,
                "lag_events": report.lag_events,
                "lag_seconds": report.lag_seconds,
                "dead_letters": report.dead_letters,
                "halted": None if report.halted is None else _letter_json(report.halted),
            }
            for report in reports
        ]
        halts = [report.halted for report in reports if report.halted is not None]
        return rows, refusal, halts, orders_app.newer_versions_serving(reports)

    rows, refusal, halts, warnings = run_with_app(db, work, existing=True)
    if as_json:
        _print_json(rows)
    else:
        table = RichTable(title="Projections", title_justify="left")
        columns = ("projection", "version", "role", "checkpoint", "head", "behind", "dead letters")
        for column in columns:
            left = column in ("projection", "role")
            table.add_column(column, justify="left" if left else "right")
        for row in rows:
            cells = (str(row["position"]), str(row["head"]), _behind(row), str(row["dead_letters"]))
            table.add_row(row["projection"], str(row["version"]), row["role"], *cells)
        out = render.console()
        out.print(table)
        for halt in halts:
            out.print(render.halt_notice(halt), soft_wrap=True)
        for warning in warnings:
            out.print(Text.assemble(("warning:", "yellow"), f" {warning}"), soft_wrap=True)
    if refusal is not None:
        _fail(refusal, EXIT_UNAVAILABLE)


def _behind(row: dict[str, Any]) -> str:
    if row["halted"] is not None:
        return "halted"
    lag, position, head = row["lag_events"], row["position"], row["head"]
    if position > head:
        return "ahead of the log!"
    return "up to date" if lag == 0 else f"{lag}{'+' if lag >= LAG_CAP else ''} events"


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str | None, typer.Argument(help="One projection; all if omitted.")] = None,
    db: DbOption = None,
    nats: NatsOption = None,
    stream: StreamOption = None,
) -> None:
    """Empty the read model and replay every event into it, with a progress bar.

    With --nats (PostgreSQL): the read model the partitioned workers keep (`orders project
    --nats`). Its tables are emptied and every partition checkpoint forgotten in one
    transaction; the running workers build it again from the stream (this process runs a
    worker while none is running), and the command waits until it has caught up. Without
    --nats, a read model kept by partitioned workers is refused (exit 2), never rebuilt as
    one projection."""

    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    settings = Settings.from_env(
        db_url=db, nats_url=nats, nats_stream=stream, partitioned=_partitioned(nats, None)
    )

    async def work(orders_app: OrdersApp) -> RebuildOutcome:
        with Progress(*columns, console=render.console()) as progress:
            tasks: dict[str, TaskID] = {}

            async def advance(projection: str, done: int, total: int) -> None:
                if projection not in tasks:
                    tasks[projection] = progress.add_task(projection, total=total)
                progress.update(tasks[projection], completed=done, total=total)

            return await orders_app.rebuild(None if name is None else [name], on_progress=advance)

    outcome = run_with_app(db, work, settings=settings, existing=True)
    rebuilt = f" rebuilt {', '.join(outcome.projections)} up to position {outcome.position}"
    if outcome.partitions is not None:
        by = (
            "by this process (no worker of the group was running)"
            if outcome.in_process and not outcome.workers
            else f"by the workers of group {settings.nats_stream!r}"
        )
        rebuilt += f", {outcome.partitions} partitions each, {by}"
    render.console().print(Text.assemble(("ok", "green"), rebuilt), soft_wrap=True)


@projections_app.command("drop-retired")
def projections_drop_retired(db: DbOption = None) -> None:
    """Drop the tables of projection versions a newer version replaced (blue/green), now
    rather than after the services' grace period. Versions replaced less than a few seconds
    ago are kept: every service must have seen the switch."""

    async def work(orders_app: OrdersApp) -> tuple[list[ProjectionVersion], list[str]]:
        dropped = await orders_app.drop_retired_versions()
        waiting = [
            f"{version.key} (retired {version.since.isoformat(timespec='seconds')})"
            for version in await orders_app.projection_versions()
            if version.role is VersionRole.RETIRED
        ]
        return dropped, waiting

    dropped, waiting = run_with_app(db, work, existing=True)
    console = render.console()
    for version in dropped:
        tables = ", ".join(version.tables)
        console.print(Text.assemble(("dropped", "green"), f" {version.key}: {tables}"))
    for version_key in waiting:
        console.print(f"kept {version_key}: retired too recently, try again in a few seconds")
    if not dropped and not waiting:
        console.print("no retired projection versions")


ProjectionArgument = Annotated[
    str | None, typer.Argument(help="One projection; all if omitted.", show_default=False)
]
OrderOption = Annotated[
    str | None,
    typer.Option("--order", help="Only this order's dead letters.", show_default=False),
]


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    event = letter.event
    return {
        "projection": letter.projection,
        "position": letter.position,
        "stream_id": letter.stream_id,
        "stream_version": event.stream_version,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "recorded_at": event.recorded_at,
        "data": msgspec.Raw(event.data) if _is_json(event.data) else event.data.decode(),
        "status": "halted" if letter.halted else "parked",
        "blocked_by": letter.blocked_by,
        "attempts": letter.attempts,
        "error": letter.error,
        "traceback": letter.traceback,
        "failed_at": letter.failed_at,
    }


def _is_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return True


@projections_app.command("dead-letters")
def projections_dead_letters(
    name: ProjectionArgument = None,
    order: OrderOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The events the projections could not apply: the parked ones (policy park) and the one
    a projection halted at (policy stop), with their errors (--json: and tracebacks)."""

    async def work(orders_app: OrdersApp) -> list[DeadLetter]:
        return await orders_app.dead_letters(name, order_id=order)

    letters = run_with_app(db, work, existing=True)
    if as_json:
        _print_json([_letter_json(letter) for letter in letters])
    else:
        render.console().print(render.dead_letters_table(letters))


@projections_app.command("retry")
def projections_retry(
    name: ProjectionArgument = None, order: OrderOption = None, db: DbOption = None
) -> None:
    """Apply the dead letters again (after a fix): each stream's in order, each exactly once;
    a halted projection applies its halted event and resumes. Exits 1 if one fails again."""

    async def work(orders_app: OrdersApp) -> dict[str, Any]:
        return await orders_app.retry_dead_letters(name, order_id=order)

    outcomes = run_with_app(db, work, existing=True)
    out = render.console()
    for projection, outcome in outcomes.items():
        applied = f" {projection}: applied {outcome.applied} dead letter(s)"
        out.print(Text.assemble(("ok", "green"), applied), soft_wrap=True)
        for letter in outcome.failed:
            failed = (
                f" {projection}: position {letter.position} ({letter.event.event_type} of "
                f"{letter.stream_id}) failed again (attempt {letter.attempts}): {letter.error}"
            )
            out.print(Text.assemble(("error:", "red"), failed), soft_wrap=True)
    if any(outcome.failed for outcome in outcomes.values()):
        raise typer.Exit(EXIT_REJECTED)


@projections_app.command("discard")
def projections_discard(
    name: ProjectionArgument = None,
    order: OrderOption = None,
    db: DbOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop the dead letters without applying them; a discarded halt is skipped and its
    projection resumes after it. The read model then lacks those events."""
    which = f"{name or 'every projection'}{f' for order {order}' if order else ''}"
    if not yes and not typer.confirm(f"Drop the dead letters of {which} unapplied?"):
        _fail("nothing discarded", EXIT_REJECTED)

    async def work(orders_app: OrdersApp) -> dict[str, int]:
        return await orders_app.discard_dead_letters(name, order_id=order)

    for projection, dropped in run_with_app(db, work, existing=True).items():
        done = f" {projection}: discarded {dropped} dead letter(s)"
        render.console().print(Text.assemble(("ok", "green"), done), soft_wrap=True)


@db_app.command("migrate")
def db_migrate(db: DbOption = None) -> None:
    """Create or upgrade the schema of the event store and read model (idempotent)."""

    async def work(orders_app: OrdersApp) -> str:
        return orders_app.settings.db_url

    url = run_with_app(db, work)
    render.console().print(Text.assemble(("ok", "green"), f" schema is up to date: {redact(url)}"))


@db_app.command("reset")
def db_reset(
    db: DbOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete the event store and its read model together: every event, irreversibly (stop
    the services using it first). The next command starts a new, empty store."""
    url = Settings.from_env(db_url=db).db_url
    if not asyncio.run(_exists(url)):
        _fail(f"no event store at {redact(url)}: nothing to delete", EXIT_INVALID)
    if not yes and not typer.confirm(
        f"Delete every event and the read model at {redact(url)}? This cannot be undone"
    ):
        _fail("nothing deleted", EXIT_REJECTED)
    tables = [table for projection in PROJECTIONS for table in projection.tables]
    try:
        asyncio.run(delete_backend(url, tables))
    except (StoreUnavailable, ConfigurationError) as error:
        _fail(str(error), EXIT_UNAVAILABLE)
    render.console().print(Text.assemble(("ok", "green"), f" deleted the store at {redact(url)}"))


@db_app.command("advance-transaction-ids")
def db_advance_transaction_ids(db: DbOption = None) -> None:
    """PostgreSQL restored from a dump of another cluster: use up transaction ids until new
    ones are above those of the stored events (one empty transaction each)."""
    url = Settings.from_env(db_url=db).db_url
    if scheme_of(normalise_url(url)) not in ("postgresql", "postgres"):
        _fail("only PostgreSQL stores have transaction ids", EXIT_INVALID)
    from cqrskit.postgres import advance_transaction_ids

    try:
        burnt = asyncio.run(advance_transaction_ids(url))
    except (StoreUnavailable, ConfigurationError) as error:
        _fail(str(error), EXIT_UNAVAILABLE)
    render.console().print(Text.assemble(("ok", "green"), f" used up {burnt} transaction ids"))


async def _exists(url: str) -> bool:
    try:
        return await store_exists(url)
    except (StoreUnavailable, ConfigurationError) as error:
        _fail(str(error), EXIT_UNAVAILABLE)


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    db: DbOption = None,
    no_projections: Annotated[
        bool,
        typer.Option(
            "--no-projections", help="Only serve; run the projections with `orders project`."
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Start with the seed's demo orders if the store is empty."),
    ] = False,
    nats: NatsOption = None,
    stream: StreamOption = None,
    read_db: Annotated[
        str | None,
        typer.Option(
            "--read-db",
            help="This node's own read model (sqlite:///node.read.db), fed from JetStream "
            "(needs --nats); default $CQRSKIT_READ_DB",
            show_default=False,
        ),
    ] = None,
    node_name: Annotated[
        str | None,
        typer.Option(
            "--node-name", help="This node's name (its JetStream consumers).", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Serve from N processes sharing the port (PostgreSQL stores only); the "
            "projections run in one of them at a time (leases).",
        ),
    ] = 1,
    listen_fd: Annotated[int | None, typer.Option("--listen-fd", hidden=True)] = None,
) -> None:
    """Run the HTTP service (dashboard at /, API docs at /docs) until SIGINT/SIGTERM; the
    projections run beside it."""
    from orders.http import server  # the web stack is loaded only to serve

    configure_logging()
    settings = Settings.from_env(
        db_url=db, nats_url=nats, nats_stream=stream, read_db_url=read_db, node_name=node_name,
        partitioned=_partitioned(nats, read_db),
    )  # fmt: skip
    if workers > 1:
        _refuse_workers(settings)

        def worker(index: int, fd: int) -> list[str]:
            # the same options, resolved (the environment is inherited as well)
            command = [sys.executable, "-m", "orders", "serve", "--listen-fd", str(fd)]
            command += ["--db", settings.db_url]
            command += ["--no-projections"] if no_projections else []
            command += ["--demo"] if demo and index == 0 else []
            command += ["--nats", nats] if nats else []
            command += ["--stream", stream] if stream else []
            command += ["--node-name", node_name] if node_name else []
            return command

        raise typer.Exit(server.serve_in_workers(worker, workers, host, port))
    listener = None if listen_fd is None else socket.socket(fileno=listen_fd)

    async def work(orders_app: OrdersApp) -> None:
        if demo and await orders_app.head_position() == 0:
            for command in DEMO_COMMANDS:
                await orders_app.send(command)
        await server.serve(
            orders_app,
            host=host,
            port=port,
            run_projections=not no_projections,
            listener=listener,
        )

    run_with_app(db, work, settings=settings, loop_factory=server.event_loop_factory())


def _refuse_workers(settings: Settings) -> None:
    """Several worker processes need a store that several processes write safely."""
    if scheme_of(settings.db_url) not in ("postgresql", "postgres"):
        _fail(
            f"--workers needs a PostgreSQL store, not {redact(settings.db_url)}: a SQLite "
            "store commits through one writer thread of one process (and a memory store "
            "lives in one process); serve it from one process (leave out --workers)",
            EXIT_INVALID,
        )
    if settings.read_db_url is not None:
        _fail(
            "--workers cannot share one --read-db between processes; run one process per "
            "node's read model",
            EXIT_INVALID,
        )


@app.command()
def relay(db: DbOption = None, nats: NatsOption = None, stream: StreamOption = None) -> None:
    """Publish the event store to JetStream until SIGINT/SIGTERM (one relay is active; more
    stand by and take over)."""
    from orders.relay import relay as run_relay

    configure_logging()
    settings = Settings.from_env(db_url=db, nats_url=nats, nats_stream=stream)
    run_with_app(db, run_relay, settings=settings)


@app.command()
def project(db: DbOption = None, nats: NatsOption = None, stream: StreamOption = None) -> None:
    """Run the projections as a separate worker until SIGINT/SIGTERM (serve --no-projections).

    With --nats (PostgreSQL only), a partitioned worker: it joins the other workers of the
    stream, takes its share of the partitions and reads them from JetStream."""
    from orders.worker import project as run_projections

    configure_logging()
    settings = Settings.from_env(
        db_url=db, nats_url=nats, nats_stream=stream, partitioned=_partitioned(nats, None)
    )
    run_with_app(db, run_projections, settings=settings)


def _partitioned(nats: str | None, read_db: str | None) -> bool | None:
    """--nats on the command line without a read database of the node's own: the read model in
    PostgreSQL is kept by partitioned workers (else as CQRSKIT_PARTITIONED says)."""
    return True if nats is not None and read_db is None else None


def main() -> None:
    """Entry point of the ``orders`` command."""
    app()
