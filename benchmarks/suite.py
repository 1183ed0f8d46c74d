"""Runs every figure on every backend, both sides, and collects verified measurements.

A figure whose run raises (including a failed verification) is recorded as not verified,
with the error as its note; the suite goes on with the next one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console

from benchmarks import cqrskit_bench as cq
from benchmarks import es_bench as es
from benchmarks import lag
from benchmarks import snapshot_bench as snapshots
from benchmarks import workload as w
from benchmarks.baseline import durable_commits_per_second
from benchmarks.config import QUERIES, Sizes
from benchmarks.databases import Database, Databases
from benchmarks.hot_stream import CLIENTS, hot_stream
from benchmarks.measure import Measurement, percentile

ES_BACKENDS = ("sqlite", "postgres")


class Suite:
    def __init__(
        self, sizes: Sizes, backends: Iterable[str], dbs: Databases, console: Console
    ) -> None:
        self.sizes = sizes
        self.backends = tuple(backends)
        self.dbs = dbs
        self.console = console
        self.measurements: list[Measurement] = []
        self.http: Callable[[Suite, str], None] | None = None
        #: raw durable commits/s per backend, at the start and the end of the run
        self.baseline: dict[str, list[float]] = {}

    # -- recording --

    def record(self, figure: str, backend: str, side: str, value: float, **extra: Any) -> None:
        samples = int(extra.pop("samples", 0))
        note = str(extra.pop("note", ""))
        self.measurements.append(
            Measurement(figure, backend, side, value, True, samples, note, extra)
        )

    def record_latencies(
        self, prefix: str, backend: str, side: str, values: list[float], scale: float = 1.0
    ) -> None:
        for q in (50, 99):
            value = percentile(values, q) * scale
            self.record(f"{prefix}_p{q}", backend, side, value, samples=len(values))

    def section(
        self, title: str, figures: list[str], backend: str, side: str, body: Callable[[], None]
    ) -> str | None:
        """Run ``body``; if it raises, record ``figures`` as failed and return the error."""
        self.console.log(f"[bold]{backend}[/] · {side} · {title}")
        start = time.perf_counter()
        detail = None
        try:
            body()
        except Exception as error:
            self.console.log(f"[red]  failed: {error!r}")
            detail = "failed: " + "".join(traceback.format_exception_only(error)).strip()
            for figure in figures:
                self.measurements.append(Measurement(figure, backend, side, None, False, 0, detail))
        self.console.log(f"  {time.perf_counter() - start:.1f}s")
        return detail

    # -- the figures --

    def measure_baseline(self) -> None:
        for backend in self.backends:
            if backend != "memory":
                db = self.fresh(backend, "raw")
                self.baseline.setdefault(backend, []).append(durable_commits_per_second(db))
                self.dbs.drop(db)

    #: sections that can run on their own (``--only``): one call per backend, cqrskit only
    SINGLE = ("long_order_loads", "rebuild_peak", "http")

    def run_only(self, sections: Iterable[str]) -> list[Measurement]:
        """Only ``sections`` (names from :attr:`SINGLE`), on every backend."""
        for backend in self.backends:
            for section in sections:
                getattr(self, f"_{section}")(backend)
        return self.measurements

    def run(self) -> list[Measurement]:
        self.measure_baseline()
        for backend in self.backends:
            sides = self.sides(backend)
            self._commands(backend, 1, "commands_1", self.sizes.orders_1)
            self._commands(backend, self.sizes.clients, "commands_64", self.sizes.orders_64)
            self._batch_append(backend)
            for side in sides:
                self._read_side(backend, side)
            self._long_order_loads(backend)
            for side in sides:
                self._lag(backend, side)
            self._hot_stream(backend)
            if backend != "memory":
                self._rebuild_peak(backend)
                self._http(backend)
        self.measure_baseline()
        return self.measurements

    def _http(self, backend: str) -> None:
        if self.http is not None and backend != "memory":
            self.http(self, backend)

    @staticmethod
    def sides(backend: str) -> tuple[str, ...]:
        return ("cqrskit", "eventsourcing") if backend in ES_BACKENDS else ("cqrskit",)

    def fresh(self, backend: str, label: str) -> Database:
        return self.dbs.fresh(backend, label)

    def _throughput(
        self,
        backend: str,
        key: str,
        title: str,
        run: Callable[[Database, str], tuple[float, int]],
    ) -> None:
        """Measure ``key`` in ``sizes.rounds`` rounds, the sides taking turns (so that both
        see the same moments of a shared machine); record each side's median."""
        sides = self.sides(backend)
        values: dict[str, list[float]] = {side: [] for side in sides}
        counts: dict[str, int] = {}
        errors: dict[str, str] = {}
        for number in range(1, self.sizes.rounds + 1):
            for side in sides:
                if len(values[side]) < number - 1:
                    continue  # an earlier round of this side failed

                def body(side: str = side) -> None:
                    db = self.fresh(backend, key)
                    value, counts[side] = run(db, side)
                    self.dbs.drop(db)
                    values[side].append(value)

                error = self.section(f"{title}, round {number}", [], backend, side, body)
                if error is not None:
                    errors[side] = error
        for side in sides:
            if len(values[side]) < self.sizes.rounds:
                self.measurements.append(
                    Measurement(key, backend, side, None, False, 0, errors.get(side, "failed"))
                )
                continue
            rounds = values[side]
            note = "rounds: " + ", ".join(f"{v:,.0f}" for v in rounds) if len(rounds) > 1 else ""
            self.record(
                key,
                backend,
                side,
                statistics.median(rounds),
                samples=counts[side],
                note=note,
                rounds=rounds,
            )

    def _commands(self, backend: str, clients: int, key: str, orders: int) -> None:
        def run(db: Database, side: str) -> tuple[float, int]:
            if side == "cqrskit":
                return asyncio.run(cq.commands(db, orders, clients))
            return es.commands(db, orders, clients)

        self._throughput(backend, key, f"{clients} client(s)", run)

    def _batch_append(self, backend: str) -> None:
        batches = self.sizes.batches

        def run(db: Database, side: str) -> tuple[float, int]:
            if side == "cqrskit":
                return asyncio.run(cq.batch_append(db, batches)), batches * 100
            return es.batch_append(db, batches), batches * 100

        self._throughput(backend, "batch_append", "batch append", run)

    def _read_side(self, backend: str, side: str) -> None:
        figures = ["read_all", "projection_build", "load_p50", "load_p99"] + [
            f"query_{q}_p{p}" for q in QUERIES for p in (50, 99)
        ]
        orders = self.sizes.build_orders
        expected = w.Expected.for_orders(orders)
        step = max(1, orders // self.sizes.latency_samples)
        sample = [i % orders for i in range(0, self.sizes.latency_samples * step, step)]

        def body() -> None:
            db = self.fresh(backend, "read")
            if side == "cqrskit":
                asyncio.run(self._cqrskit_read_side(db, backend, orders, expected, sample))
            else:
                self._es_read_side(db, backend, orders, expected, sample)
            self.dbs.drop(db)

        self.section("projection build, loads, queries", figures, backend, side, body)

    async def _cqrskit_read_side(
        self, db: Database, backend: str, orders: int, expected: w.Expected, sample: list[int]
    ) -> None:
        app = await cq.open_app(db)
        try:
            if backend == "memory":  # the memory store lives in the app: fill it in place
                await cq.prefill_app(app, orders)
            else:
                await app.close()
                await cq.prefill(db, orders)
                app = await cq.open_app(db)
            read_seconds, read_events = await cq.read_everything(app)
            self.record("read_all", backend, "cqrskit", read_events / read_seconds)
            seconds = await cq.projection_build(app)
            await cq.verify_read_model(app, expected, sample[:50])
            self.record(
                "projection_build",
                backend,
                "cqrskit",
                expected.events / seconds,
                samples=expected.events,
            )
            loads = await cq.load_latencies(app, sample)
            self.record_latencies("load", backend, "cqrskit", loads)
            queries = await cq.query_latencies(app, orders, self.sizes.latency_samples)
            for name, values in queries.items():
                self.record_latencies(f"query_{name}", backend, "cqrskit", values)
        finally:
            await app.close()

    def _es_read_side(
        self, db: Database, backend: str, orders: int, expected: w.Expected, sample: list[int]
    ) -> None:
        last = es.prefill(db, orders)
        seconds = es.projection_build(db, last, timeout=1800)
        view = es.open_view(db)
        es.verify_view(view, expected, sample[:50])
        self.record(
            "projection_build",
            backend,
            "eventsourcing",
            expected.events / seconds,
            samples=expected.events,
        )
        loads = es.load_latencies(db, sample)
        self.record_latencies("load", backend, "eventsourcing", loads)
        queries = es.query_latencies(db, orders, self.sizes.latency_samples)
        for name, values in queries.items():
            self.record_latencies(f"query_{name}", backend, "eventsourcing", values)

    def _long_order_loads(self, backend: str) -> None:
        events, loads = self.sizes.long_order_events, self.sizes.long_order_loads
        names = ("long_load", "long_load_snapshot")
        figures = [f"{n}_p{q}" for n in (*names, "snapshot_speedup") for q in (50, 99)]

        def body() -> None:
            db = self.fresh(backend, "long")
            without, with_snapshots = asyncio.run(snapshots.long_order_loads(db, events, loads))
            self.dbs.drop(db)
            note = f"{events:,} events, cold; snapshots: the one taken 99 events before the end"
            for name, values in zip(names, (without, with_snapshots), strict=True):
                for q in (50, 99):
                    value = percentile(values, q)
                    self.record(f"{name}_p{q}", backend, "cqrskit", value, samples=loads, note=note)
            for q in (50, 99):
                speedup = percentile(without, q) / percentile(with_snapshots, q)
                self.record(f"snapshot_speedup_p{q}", backend, "cqrskit", speedup, samples=loads)

        self.section(f"loads of a {events:,}-event order", figures, backend, "cqrskit", body)

    def _lag(self, backend: str, side: str) -> None:
        rate, seconds = self.sizes.lag_rate, self.sizes.lag_seconds

        def body() -> None:
            db = self.fresh(backend, "lag")
            if side == "cqrskit":
                result = asyncio.run(lag.cqrskit_lag(db, rate, seconds))
            else:
                result = lag.es_lag(db, rate, seconds)
            self.dbs.drop(db)
            self.record_latencies("lag", backend, side, result.lags_ms)
            self.record(
                "lag_rate",
                backend,
                side,
                result.achieved_rate,
                samples=result.commands,
                note=f"offered {rate:.0f}/s",
            )

        self.section(
            f"lag at {rate:.0f} commands/s", ["lag_p50", "lag_p99", "lag_rate"], backend, side, body
        )

    def _hot_stream(self, backend: str) -> None:
        commands = self.sizes.orders_1
        for writers in (1, 2):

            def body(writers: int = writers) -> None:
                db = self.fresh(backend, "hot")
                result = asyncio.run(hot_stream(db, commands, writers))
                self.dbs.drop(db)
                note = f"{commands} AddItems from {CLIENTS} clients on one order"
                self.record(
                    f"hot_stream_{writers}",
                    backend,
                    "cqrskit",
                    result.commands_per_second,
                    samples=commands,
                    note=note,
                )
                self.record(
                    f"hot_stream_conflicts_{writers}",
                    backend,
                    "cqrskit",
                    result.conflict_share * 100,
                    samples=commands,
                )

            figures = [f"hot_stream_{writers}", f"hot_stream_conflicts_{writers}"]
            self.section(f"hot stream, {writers} writer(s)", figures, backend, "cqrskit", body)

    def _rebuild_peak(self, backend: str) -> None:
        orders = -(-self.sizes.peak_events // w.COMMANDS_PER_ORDER)

        def body() -> None:
            db = self.fresh(backend, "peak")
            asyncio.run(cq.prefill(db, orders))
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.rebuild_peak", db.url, str(orders)],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
            )
            if child.returncode != 0:
                raise RuntimeError(f"rebuild process failed: {child.stderr[-2000:]}")
            report = json.loads(child.stdout.strip().splitlines()[-1])
            self.dbs.drop(db)
            events = report["events"]
            curve = report["rss_curve"]
            note = (
                f"{events:,} events; RSS {report['baseline_mb']:.0f} MB before the rebuild, "
                f"{curve[min(1, len(curve) - 1)][2]:.0f} MB early in the rebuild, "
                f"{curve[-1][2]:.0f} MB "
                "at the end (peak includes verification queries)"
            )
            self.record(
                "rebuild_peak_mb",
                backend,
                "cqrskit",
                report["peak_mb"],
                samples=events,
                note=note,
                baseline_mb=report["baseline_mb"],
                rss_curve=curve,
            )
            self.record(
                "rebuild_rate", backend, "cqrskit", events / report["seconds"], samples=events
            )

        self.section(
            f"rebuild memory peak ({orders * 3:,} events)",
            ["rebuild_peak_mb", "rebuild_rate"],
            backend,
            "cqrskit",
            body,
        )
