"""The figures measured on the `eventsourcing` side (threads, its own APIs throughout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import ProjectionRunner
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.utils import Environment

from benchmarks import workload as w
from benchmarks.databases import Database
from benchmarks.es_domain import Order, OrdersApplication, item_dict
from benchmarks.es_views import OrdersProjection, OrdersView, view_class
from benchmarks.measure import check, latencies_us, rate

SIDE = "eventsourcing"


def open_app(db: Database) -> OrdersApplication:
    return OrdersApplication(env=db.es_env)


def open_view(db: Database) -> OrdersView:
    env = Environment(OrdersProjection.name, db.es_env)
    factory: Any = InfrastructureFactory.construct(env=env)
    view: OrdersView = factory.tracking_recorder(view_class(db.backend))
    return view


def check_durability(app: OrdersApplication) -> None:
    """The library's connections commit durably (it sets nothing; these are the defaults)."""
    datastore: Any = app.recorder.datastore  # type: ignore[attr-defined]
    with datastore.transaction(commit=False) as cursor:
        if isinstance(datastore, SQLiteDatastore):
            cursor.execute("PRAGMA synchronous")
            check(cursor.fetchone()[0] == 2, "eventsourcing SQLite is not synchronous=FULL")
            cursor.execute("PRAGMA journal_mode")
            check(cursor.fetchone()[0] == "wal", "eventsourcing SQLite is not in WAL mode")
        else:
            cursor.execute("SHOW synchronous_commit")
            row = cursor.fetchone()
            check(row["synchronous_commit"] == "on", "PostgreSQL synchronous_commit is not on")


def run_order(app: OrdersApplication, i: int, orders: int) -> int:
    """Order ``i``'s three commands; the notification id of the last event."""
    oid = w.order_id(i)
    app.create_order(oid, w.customer_id(i, orders), [item_dict(x) for x in w.created_items(i)])
    app.add_item(oid, item_dict(w.added_item(i)))
    return app.submit_order(oid)


def verify_orders(app: OrdersApplication, indexes: range | list[int]) -> None:
    for i in indexes:
        order = app.get_order(w.order_id(i))
        check(order.status == "submitted", f"es order {i} not submitted")
        check(len(order.items) == 3, f"es order {i} has {len(order.items)} items")
        cents = int(order.total * 100)
        check(cents == w.order_total_cents(i), f"es order {i} total {cents}")


def commands(db: Database, orders: int, clients: int) -> tuple[float, int]:
    """(commands/s, commands) running ``orders`` orders from ``clients`` threads."""
    app = open_app(db)
    try:
        check_durability(app)
        shares = list(w.split(orders, clients))

        def client(share: range) -> None:
            for i in share:
                run_order(app, i, orders)

        start = time.perf_counter()
        if clients == 1:
            client(shares[0])
        else:
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, shares))
        seconds = time.perf_counter() - start
        verify_orders(app, range(orders))
        return rate(orders * w.COMMANDS_PER_ORDER, seconds), orders * w.COMMANDS_PER_ORDER
    finally:
        app.close()


def batch_order(b: int) -> Order:
    """An order with 100 pending events: created, 98 items added, submitted."""
    oid = w.order_id(b, "b")
    order = Order(oid, w.customer_id(b, 1), [item_dict(x) for x in w.created_items(b)])
    for j in range(98):
        order.add_item(item_dict(w.batch_item(j)))
    order.submit()
    return order


def batch_append(db: Database, batches: int) -> float:
    """events/s putting 100-event batches into the event store (``EventStore.put``)."""
    app = open_app(db)
    try:
        start = time.perf_counter()
        for b in range(batches):
            app.events.put(batch_order(b).collect_events())
        seconds = time.perf_counter() - start
        check(app.recorder.max_notification_id() is not None, "no events stored")
        last = list(app.events.get(Order.create_id(w.order_id(batches - 1, "b"))))
        check(len(last) == 100, f"last batch stream has {len(last)} events")
        return rate(batches * 100, seconds)
    finally:
        app.close()


def prefill(db: Database, orders: int) -> int:
    """Store ``orders`` complete orders quickly (100 orders per save); the last event's id."""
    app = open_app(db)
    try:
        last = 0
        for first in range(0, orders, 100):
            batch = []
            for i in range(first, min(first + 100, orders)):
                order = Order(
                    w.order_id(i),
                    w.customer_id(i, orders),
                    [item_dict(x) for x in w.created_items(i)],
                )
                order.add_item(item_dict(w.added_item(i)))
                order.submit()
                batch.append(order)
            last = app.save(*batch)[-1].notification.id
        return last
    finally:
        app.close()


class PullRunner:
    """Feeds :class:`OrdersProjection` on SQLite, whose recorder cannot ``subscribe``.

    It does what the library's ``ApplicationSubscription`` does (select notifications after
    the view's tracking position, map them to domain events, call ``process_event``), waking
    on an in-process prompt after each save, as the library's ``system`` runners do.
    """

    def __init__(self, db: Database, batch: int = 500) -> None:
        self.app = open_app(db)
        self.view = open_view(db)
        self.projection = OrdersProjection(view=self.view)
        self._batch = batch
        self.prompt = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed: Callable[[int], None] | None = None

    def run_until(self, last: int) -> None:
        position = self.view.max_tracking_id(self.app.name) or 0
        while position < last and not self._stop.is_set():
            notifications = self.app.recorder.select_notifications(
                start=position, limit=self._batch, inclusive_of_start=False
            )
            if not notifications:
                self.prompt.wait(0.05)
                self.prompt.clear()
                continue
            for notification in notifications:
                event = self.app.mapper.to_domain_event(notification)
                self.projection.process_event(event, Tracking(self.app.name, notification.id))
                if self.processed is not None:
                    self.processed(notification.id)
            position = notifications[-1].id

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_until, args=(2**62,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.prompt.set()
        if self._thread is not None:
            self._thread.join()
        self.app.close()


def wait_tracked(view: OrdersView, app_name: str, last: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (view.max_tracking_id(app_name) or 0) < last:
        check(time.monotonic() < deadline, f"projection did not reach {last} in {timeout}s")
        time.sleep(0.005)


def projection_build(db: Database, last: int, timeout: float) -> float:
    """Seconds for the projection to process every stored event into a fresh view."""
    if db.backend == "sqlite":
        runner = PullRunner(db)
        start = time.perf_counter()
        runner.run_until(last)
        seconds = time.perf_counter() - start
        runner.close()
        return seconds
    start = time.perf_counter()
    with ProjectionRunner(
        application_class=OrdersApplication,
        projection_class=OrdersProjection,
        view_class=view_class(db.backend),
        env=db.es_env,
    ) as pg_runner:
        wait_tracked(pg_runner.projection.view, pg_runner.app.name, last, timeout)
        return time.perf_counter() - start


def verify_view(view: OrdersView, expected: w.Expected, sample: list[int]) -> None:
    stats = view.dashboard_stats()
    check(stats is not None, "es dashboard missing")
    assert stats is not None
    check(stats["total_orders"] == expected.orders, f"es orders {stats['total_orders']}")
    check(stats["submitted_orders"] == expected.submitted, "es submitted count")
    check(stats["total_revenue_cents"] == expected.revenue_cents, "es revenue")
    daily = view.daily_stats()
    check(sum(d["revenue_cents"] for d in daily) == expected.revenue_cents, "es daily revenue")
    for i in sample:
        order = view.get_order(w.order_id(i))
        check(order is not None and order["total_cents"] == w.order_total_cents(i), "es row")


def load_latencies(db: Database, sample: list[int]) -> list[float]:
    """Cold loads (no aggregate cache) of the sampled orders, in microseconds."""
    app = open_app(db)
    try:
        verify_orders(app, sample[:50])
        ids = iter([Order.create_id(w.order_id(i)) for i in sample])
        return latencies_us(lambda: app.repository.get(next(ids)), len(sample))
    finally:
        app.close()


def query_latencies(db: Database, orders: int, count: int) -> dict[str, list[float]]:
    """Microseconds per query on the built view, for each of the five seed queries."""
    view = open_view(db)
    customers = max(1, orders // w.ORDERS_PER_CUSTOMER)
    order_ids = iter(w.order_id((k * 7919) % orders) for k in range(count))
    customer_ids = iter(f"c{(k * 31) % customers:06d}" for k in range(count))
    found = view.orders_by("customer_id", "c000000", 20)
    check(len(found) == min(20, w.ORDERS_PER_CUSTOMER, orders), f"es by customer {len(found)}")
    return {
        "get_order": latencies_us(lambda: view.get_order(next(order_ids)), count),
        "orders_by_customer": latencies_us(
            lambda: view.orders_by("customer_id", next(customer_ids), 20), count
        ),
        "orders_by_status": latencies_us(lambda: view.orders_by("status", "submitted", 20), count),
        "daily_stats": latencies_us(view.daily_stats, count),
        "dashboard_stats": latencies_us(view.dashboard_stats, count),
    }
