"""Prometheus metrics of the service.

Each API instance has its own registry (several services may live in one process, e.g. tests).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cqrskit import ProjectionReport, ProjectionState
from cqrskit.supervision import LAG_CAP
from orders.app import OrdersApp

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _RetriesCollector(Collector):
    def __init__(self, orders_app: OrdersApp) -> None:
        self._app = orders_app

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "cqrskit_command_retries",
            "Commands decided again after a concurrency conflict (optimistic concurrency).",
        )
        family.add_metric([], self._app.command_retries)
        yield family
        snapshots = CounterMetricFamily(
            "cqrskit_snapshots_taken",
            "Snapshots of stream states saved by this process (every N events of a stream).",
        )
        snapshots.add_metric([], self._app.snapshots_taken)
        yield snapshots


class _SupervisionCollector(Collector):
    """What the supervisor knows without asking the store, so that it is there during an
    outage too (when restarts happen)."""

    def __init__(self, orders_app: OrdersApp) -> None:
        self._app = orders_app

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "cqrskit_projection_restarts",
            "Restarts of each projection after it stopped on an error, in this process.",
            labels=["projection"],
        )
        state = GaugeMetricFamily(
            "cqrskit_projection_state",
            "1 for the state each projection is in: " + ", ".join(ProjectionState) + ".",
            labels=["projection", "state"],
        )
        running = GaugeMetricFamily(
            "cqrskit_projection_running",
            "1 when the projection is alive in this process (running, catching up or standing"
            " by for its lease), 0 when backing off or stopped (absent: run elsewhere).",
            labels=["projection"],
        )
        for report in self._app.supervisor.status():
            restarts.add_metric([report.name], report.restarts)
            for each in ProjectionState:
                state.add_metric([report.name, each.value], 1 if report.state is each else 0)
            if report.state is not ProjectionState.EXTERNAL:
                running.add_metric([report.name], 1 if report.state.ready else 0)
        yield from (restarts, state, running)


class Metrics:
    """The service's Prometheus metrics."""

    def __init__(self, orders_app: OrdersApp) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.commands = Counter(
            "orders_commands",
            "Commands handled, by type and outcome (ok, replayed, or the problem type).",
            ["command", "outcome"],
            registry=registry,
        )
        self.command_seconds = Histogram(
            "orders_command_duration_seconds",
            "Time to handle a command: state (cached), decide, append and commit.",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Histogram(
            "orders_http_request_duration_seconds",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.position = Gauge(
            "cqrskit_projection_position",
            "Checkpoint (global position) of each projection.",
            ["projection"],
            registry=registry,
        )
        self.lag_events = Gauge(
            "cqrskit_projection_lag_events",
            f"Events not yet applied by each projection (counted up to {LAG_CAP}).",
            ["projection"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "cqrskit_projection_lag_seconds",
            "Age of the oldest event a projection has not applied yet (0 when caught up).",
            ["projection"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "cqrskit_projection_dead_letters",
            "Events each projection parked as dead letters (policy park), not yet retried or"
            " discarded.",
            ["projection"],
            registry=registry,
        )
        self.halted = Gauge(
            "cqrskit_projection_halted",
            "1 while the projection is halted at an event it cannot apply (policy stop),"
            " wherever it runs.",
            ["projection"],
            registry=registry,
        )
        registry.register(_RetriesCollector(orders_app))
        registry.register(_SupervisionCollector(orders_app))

    def observe_projections(self, reports: list[ProjectionReport]) -> None:
        """Record the store figures of :meth:`cqrskit.Supervisor.report`."""
        for report in reports:
            self.position.labels(report.name).set(report.checkpoint)
            self.lag_events.labels(report.name).set(report.lag_events or 0)
            self.lag_seconds.labels(report.name).set(report.lag_seconds or 0.0)
            self.dead_letters.labels(report.name).set(report.dead_letters or 0)
            self.halted.labels(report.name).set(0 if report.halted is None else 1)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
