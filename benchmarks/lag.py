"""End-to-end lag: a command acknowledged → its event visible in the read model, while the
projections run in the background and commands arrive at a steady rate (open loop: a command
is sent at its scheduled time whether or not earlier ones have finished)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import ProjectionRunner

from benchmarks import cqrskit_bench as cq
from benchmarks import es_bench as es
from benchmarks import workload as w
from benchmarks.databases import Database
from benchmarks.es_domain import OrdersApplication, item_dict
from benchmarks.es_views import OrdersProjection, view_class
from benchmarks.measure import check


@dataclass
class LagResult:
    lags_ms: list[float]
    achieved_rate: float  # commands acknowledged per second over the run
    commands: int


async def cqrskit_lag(db: Database, rate: float, seconds: float) -> LagResult:
    app = await cq.open_app(db)
    app.start_projections()
    orders = max(1, int(rate * seconds / w.COMMANDS_PER_ORDER))
    lags: list[float] = []
    interval = 1 / rate
    try:
        start = time.perf_counter()

        async def order(i: int) -> None:
            for k, command in enumerate(w.commands_for(i, orders=orders)):
                due = start + (i * w.COMMANDS_PER_ORDER + k) * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                result = await app.commands.handle(command)
                acked = time.perf_counter()
                # The runners' own checkpoints (moved when a batch has committed), not
                # app.wait_for_position, which re-reads them from the read store on every
                # wake-up and so adds queries of its own to what is measured.
                for runner in app.runners:
                    check(await runner.wait_for(result.position, 30.0), "lag: not visible")
                lags.append((time.perf_counter() - acked) * 1000)

        tasks = []
        for i in range(orders):
            due = start + i * w.COMMANDS_PER_ORDER * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(order(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        await cq.verify_read_model(app, w.Expected.for_orders(orders), [0, orders - 1])
        return LagResult(lags, len(lags) / elapsed, len(lags))
    finally:
        await app.close()


class TimedProjection(OrdersProjection):
    """Records when each event's view transaction has committed."""

    committed: dict[int, float] = {}

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        super().process_event(domain_event, tracking)
        TimedProjection.committed[tracking.notification_id] = time.perf_counter()


def es_lag(db: Database, rate: float, seconds: float) -> LagResult:
    committed = TimedProjection.committed = {}
    orders = max(1, int(rate * seconds / w.COMMANDS_PER_ORDER))
    expected = w.Expected.for_orders(orders)
    if db.backend == "sqlite":
        feeder = es.PullRunner(db)
        feeder.projection = TimedProjection(view=feeder.view)
        feeder.start()
        try:
            result = _drive_es(feeder.app, feeder.prompt.set, committed, rate, seconds)
            es.verify_view(feeder.view, expected, [0, orders - 1])
        finally:
            feeder.close()
        return result
    with ProjectionRunner(
        application_class=OrdersApplication,
        projection_class=TimedProjection,
        view_class=view_class(db.backend),
        env=db.es_env,
    ) as runner:
        result = _drive_es(runner.app, lambda: None, committed, rate, seconds)
        es.verify_view(runner.projection.view, expected, [0, orders - 1])
    return result


def _drive_es(
    app: OrdersApplication, prompt: Any, committed: dict[int, float], rate: float, seconds: float
) -> LagResult:
    orders = max(1, int(rate * seconds / w.COMMANDS_PER_ORDER))
    interval = 1 / rate
    acks: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def order(i: int) -> None:
        oid = w.order_id(i)
        steps = [
            lambda: app.create_order(
                oid, w.customer_id(i, orders), [item_dict(x) for x in w.created_items(i)]
            ),
            lambda: app.add_item(oid, item_dict(w.added_item(i))),
            lambda: app.submit_order(oid),
        ]
        for k, step in enumerate(steps):
            due = start + (i * w.COMMANDS_PER_ORDER + k) * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            notification_id = step()
            acked = time.perf_counter()
            prompt()
            with lock:
                acks.append((notification_id, acked))

    with ThreadPoolExecutor(32) as pool:
        futures = []
        for i in range(orders):
            due = start + i * w.COMMANDS_PER_ORDER * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            futures.append(pool.submit(order, i))
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - start
    last = max(n for n, _ in acks)
    deadline = time.monotonic() + 300
    while last not in committed:
        check(time.monotonic() < deadline, "es lag: projection did not catch up")
        time.sleep(0.005)
    return LagResult([(committed[n] - t) * 1000 for n, t in acks], len(acks) / elapsed, len(acks))
