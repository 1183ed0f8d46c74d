"""The Orders read model on the `eventsourcing` side: a materialised view and its projection.

Written the way the library's projection module intends: the view is a ``TrackingRecorder``
subclass per database whose methods write the view's rows and the tracking record in one
transaction (so one transaction per event), and a ``Projection`` dispatches events to them.
The tables and the queries mirror the Orders read model of cqrskit (per-order rows, daily
figures, the dashboard), with hand-written SQL that updates rows in place. Orders are keyed
by aggregate id, since later events carry only that.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any
from uuid import UUID

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from benchmarks.es_domain import Order
from orders.money import to_cents

Row = dict[str, Any]
STATUS_COLUMNS = ("customer_id", "status")


def _cents(items: list[dict[str, Any]]) -> int:
    return sum(to_cents(item["price"]) * item["quantity"] for item in items)


def _item_json(item: dict[str, Any]) -> str:
    return json.dumps(
        {"name": item["name"], "price": str(item["price"]), "quantity": item["quantity"]}
    )


class OrdersView(TrackingRecorder):
    """The Orders read model: one method per event kind, one per query."""

    @abstractmethod
    def order_created(self, tracking: Tracking, event: Any) -> None: ...

    @abstractmethod
    def item_added(self, tracking: Tracking, event: Any) -> None: ...

    @abstractmethod
    def order_submitted(self, tracking: Tracking, event: Any) -> None: ...

    @abstractmethod
    def get_order(self, order_id: str) -> Row | None: ...

    @abstractmethod
    def orders_by(self, column: str, value: str, limit: int) -> list[Row]: ...

    @abstractmethod
    def daily_stats(self) -> list[Row]: ...

    @abstractmethod
    def dashboard_stats(self) -> Row | None: ...


class OrdersProjection(Projection[OrdersView]):
    """Order events to :class:`OrdersView` calls."""

    name = "orders_view"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _created(self, domain_event: Order.Created, tracking: Tracking) -> None:
        self.view.order_created(tracking, domain_event)

    @process_event.register
    def _item_added(self, domain_event: Order.ItemAdded, tracking: Tracking) -> None:
        self.view.item_added(tracking, domain_event)

    @process_event.register
    def _submitted(self, domain_event: Order.Submitted, tracking: Tracking) -> None:
        self.view.order_submitted(tracking, domain_event)


def _order_row(row: Any) -> Row:
    order = dict(row)
    items = order["items"]
    order["items"] = json.loads(items) if isinstance(items, str) else items
    return order


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_TABLES = [
    "CREATE TABLE IF NOT EXISTS es_orders (id TEXT PRIMARY KEY, order_id TEXT, "
    "customer_id TEXT, status TEXT, items TEXT, total_cents INTEGER, item_count INTEGER, "
    "created_at TEXT, submitted_at TEXT)",
    "CREATE INDEX IF NOT EXISTS es_orders_customer ON es_orders (customer_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS es_orders_status ON es_orders (status, created_at, id)",
    "CREATE TABLE IF NOT EXISTS es_daily_stats (day TEXT PRIMARY KEY, order_count INTEGER, "
    "revenue_cents INTEGER)",
    "CREATE TABLE IF NOT EXISTS es_dashboard (scope TEXT PRIMARY KEY, total_orders INTEGER, "
    "total_revenue_cents INTEGER, draft_orders INTEGER, submitted_orders INTEGER)",
]


class SQLiteOrdersView(SQLiteTrackingRecorder, OrdersView):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *_SQLITE_TABLES]

    def order_created(self, tracking: Tracking, event: Any) -> None:
        cents = _cents(event.items)
        items = "[" + ",".join(_item_json(item) for item in event.items) + "]"
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "INSERT INTO es_orders VALUES (?,?,?,'draft',?,?,?,?,NULL)",
                (
                    event.originator_id.hex,
                    event.order_id,
                    event.customer_id,
                    items,
                    cents,
                    len(event.items),
                    event.timestamp.isoformat(),
                ),
            )
            c.execute(
                "INSERT INTO es_dashboard VALUES ('all',1,?,1,0) ON CONFLICT (scope) DO UPDATE "
                "SET total_orders=total_orders+1, draft_orders=draft_orders+1, "
                "total_revenue_cents=total_revenue_cents+excluded.total_revenue_cents",
                (cents,),
            )

    def item_added(self, tracking: Tracking, event: Any) -> None:
        cents = _cents([event.item])
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "UPDATE es_orders SET items=json_insert(items,'$[#]',json(?)), "
                "total_cents=total_cents+?, item_count=item_count+1 WHERE id=?",
                (_item_json(event.item), cents, event.originator_id.hex),
            )
            c.execute(
                "UPDATE es_dashboard SET total_revenue_cents=total_revenue_cents+? "
                "WHERE scope='all'",
                (cents,),
            )

    def order_submitted(self, tracking: Tracking, event: Any) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "UPDATE es_orders SET status='submitted', submitted_at=? WHERE id=? "
                "RETURNING total_cents",
                (event.timestamp.isoformat(), event.originator_id.hex),
            )
            cents = c.fetchone()[0]
            c.execute(
                "INSERT INTO es_daily_stats VALUES (?,1,?) ON CONFLICT (day) DO UPDATE SET "
                "order_count=order_count+1, revenue_cents=revenue_cents+excluded.revenue_cents",
                (event.timestamp.date().isoformat(), cents),
            )
            c.execute(
                "UPDATE es_dashboard SET draft_orders=draft_orders-1, "
                "submitted_orders=submitted_orders+1 WHERE scope='all'"
            )

    def get_order(self, order_id: str) -> Row | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT * FROM es_orders WHERE id=?", (Order.create_id(order_id).hex,))
            row = c.fetchone()
        return _order_row(row) if row is not None else None

    def orders_by(self, column: str, value: str, limit: int) -> list[Row]:
        assert column in STATUS_COLUMNS
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT * FROM es_orders WHERE {column}=? ORDER BY created_at, id LIMIT ?",
                (value, limit),
            )
            return [_order_row(row) for row in c.fetchall()]

    def daily_stats(self) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT * FROM es_daily_stats ORDER BY day")
            return [dict(row) for row in c.fetchall()]

    def dashboard_stats(self) -> Row | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT * FROM es_dashboard WHERE scope='all'")
            row = c.fetchone()
        return dict(row) if row is not None else None


# -- PostgreSQL --------------------------------------------------------------------------------

_PG_TABLES = [
    "CREATE TABLE IF NOT EXISTS {schema}.es_orders (id uuid PRIMARY KEY, order_id text, "
    "customer_id text, status text, items jsonb, total_cents bigint, item_count int, "
    "created_at timestamptz, submitted_at timestamptz)",
    "CREATE INDEX IF NOT EXISTS es_orders_customer ON {schema}.es_orders "
    "(customer_id, created_at, id)",
    "CREATE INDEX IF NOT EXISTS es_orders_status ON {schema}.es_orders (status, created_at, id)",
    "CREATE TABLE IF NOT EXISTS {schema}.es_daily_stats (day text PRIMARY KEY, "
    "order_count bigint, revenue_cents bigint)",
    "CREATE TABLE IF NOT EXISTS {schema}.es_dashboard (scope text PRIMARY KEY, "
    "total_orders bigint, total_revenue_cents bigint, draft_orders bigint, "
    "submitted_orders bigint)",
]


class PostgresOrdersView(PostgresTrackingRecorder, OrdersView):
    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.extend(SQL(s).format(schema=schema) for s in _PG_TABLES)

    def order_created(self, tracking: Tracking, event: Any) -> None:
        cents = _cents(event.items)
        items = "[" + ",".join(_item_json(item) for item in event.items) + "]"
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "INSERT INTO es_orders VALUES (%s,%s,%s,'draft',%s,%s,%s,%s,NULL)",
                (
                    event.originator_id,
                    event.order_id,
                    event.customer_id,
                    items,
                    cents,
                    len(event.items),
                    event.timestamp,
                ),
                prepare=True,
            )
            c.execute(
                "INSERT INTO es_dashboard VALUES ('all',1,%s,1,0) ON CONFLICT (scope) DO UPDATE "
                "SET total_orders=es_dashboard.total_orders+1, "
                "draft_orders=es_dashboard.draft_orders+1, total_revenue_cents="
                "es_dashboard.total_revenue_cents+excluded.total_revenue_cents",
                (cents,),
                prepare=True,
            )

    def item_added(self, tracking: Tracking, event: Any) -> None:
        cents = _cents([event.item])
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "UPDATE es_orders SET items=items||jsonb_build_array(%s::jsonb), "
                "total_cents=total_cents+%s, item_count=item_count+1 WHERE id=%s",
                (_item_json(event.item), cents, event.originator_id),
                prepare=True,
            )
            c.execute(
                "UPDATE es_dashboard SET total_revenue_cents=total_revenue_cents+%s "
                "WHERE scope='all'",
                (cents,),
                prepare=True,
            )

    def order_submitted(self, tracking: Tracking, event: Any) -> None:
        with self.datastore.transaction(commit=True) as c:
            self._insert_tracking(c, tracking)
            c.execute(
                "UPDATE es_orders SET status='submitted', submitted_at=%s WHERE id=%s "
                "RETURNING total_cents",
                (event.timestamp, event.originator_id),
                prepare=True,
            )
            row = c.fetchone()
            assert row is not None
            c.execute(
                "INSERT INTO es_daily_stats VALUES (%s,1,%s) ON CONFLICT (day) DO UPDATE SET "
                "order_count=es_daily_stats.order_count+1, "
                "revenue_cents=es_daily_stats.revenue_cents+excluded.revenue_cents",
                (event.timestamp.date().isoformat(), row["total_cents"]),
                prepare=True,
            )
            c.execute(
                "UPDATE es_dashboard SET draft_orders=draft_orders-1, "
                "submitted_orders=submitted_orders+1 WHERE scope='all'",
                prepare=True,
            )

    def get_order(self, order_id: str) -> Row | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT * FROM es_orders WHERE id=%s", (Order.create_id(order_id),), prepare=True
            )
            row = c.fetchone()
        return _order_row(row) if row is not None else None

    def orders_by(self, column: str, value: str, limit: int) -> list[Row]:
        assert column in STATUS_COLUMNS
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT * FROM es_orders WHERE {column}=%s ORDER BY created_at, id LIMIT %s",
                (value, limit),
                prepare=True,
            )
            return [_order_row(row) for row in c.fetchall()]

    def daily_stats(self) -> list[Row]:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT * FROM es_daily_stats ORDER BY day", prepare=True)
            return [dict(row) for row in c.fetchall()]

    def dashboard_stats(self) -> Row | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT * FROM es_dashboard WHERE scope='all'", prepare=True)
            row = c.fetchone()
        return dict(row) if row is not None else None


def view_class(persistence: str) -> type[OrdersView]:
    """The view class for ``"sqlite"`` or ``"postgres"``."""
    return SQLiteOrdersView if persistence == "sqlite" else PostgresOrdersView


def order_id_of(aggregate_id: UUID) -> str:
    return aggregate_id.hex
