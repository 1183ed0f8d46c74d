"""Sizes of each benchmark run, and the figures with their targets."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.measure import TIMES, Figure


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does. ``orders`` means orders of three commands/events."""

    name: str
    orders_1: int  # commands/s with one client
    orders_64: int  # commands/s with 64 clients
    clients: int
    batches: int  # 100-event batches appended
    build_orders: int  # store size for the projection build, load and query figures
    latency_samples: int  # order loads and queries of each kind
    lag_rate: float  # commands per second
    lag_seconds: float
    peak_events: int  # events rebuilt in the memory-peak process
    http_seconds: float  # per HTTP scenario
    http_connections: int
    rounds: int  # of each throughput figure, the sides taking turns; the median counts
    long_order_events: int = 10_000  # events of the order loaded with and without snapshots
    long_order_loads: int = 100  # cold loads of it, each way


QUICK = Sizes("quick", 300, 640, 64, 100, 1000, 500, 1000.0, 3.0, 100_000, 4.0, 32, 2)
FULL = Sizes(
    "full", 2000, 6400, 64, 1000, 10_000, 5000, 1000.0, 15.0, 1_000_000, 15.0, 64, 3, 10_000, 300
)
TINY = Sizes("tiny", 20, 128, 64, 5, 60, 30, 200.0, 0.5, 3000, 1.0, 4, 1, 300, 10)
PRESETS = {sizes.name: sizes for sizes in (QUICK, FULL, TINY)}

BACKENDS = ("memory", "sqlite", "postgres")
QUERIES = ("get_order", "orders_by_customer", "orders_by_status", "daily_stats", "dashboard_stats")

_SQLITE_200US = (("max", 200.0, "sqlite"),)
_TWENTY = tuple(("min", 20.0, backend) for backend in BACKENDS)
_HTTP_P99 = (("max", 20.0, "sqlite"), ("max", 20.0, "postgres"))


def _figures() -> list[Figure]:
    figures = [
        Figure(
            "commands_1",
            "commands/s, 1 client",
            "cmd/s",
            True,
            (("ratio", 3.0, "sqlite"), ("ratio", 3.0, "postgres")),
        ),
        Figure(
            "commands_64",
            "commands/s, 64 clients",
            "cmd/s",
            True,
            (("ratio", 20.0, "sqlite"), ("ratio", 30.0, "postgres")),
        ),
        Figure("batch_append", "events/s appended (100-event batches)", "ev/s", True),
        Figure("read_all", "events/s read in global order (1,000 per batch)", "ev/s", True),
        Figure(
            "projection_build",
            "projection build from zero",
            "ev/s",
            True,
            (("ratio", 50.0, "sqlite"), ("ratio", 50.0, "postgres"), ("min", 150_000.0, "sqlite")),
        ),
        Figure("load_p50", "order load p50 (cold)", "µs", False),
        Figure("load_p99", "order load p99 (cold)", "µs", False, _SQLITE_200US),
    ]
    for query in QUERIES:
        figures.append(Figure(f"query_{query}_p50", f"{query} p50", "µs", False))
        figures.append(Figure(f"query_{query}_p99", f"{query} p99", "µs", False, _SQLITE_200US))
    figures += [
        Figure("long_load_p50", "long order load p50, no snapshots", "µs", False),
        Figure("long_load_p99", "long order load p99, no snapshots", "µs", False),
        Figure("long_load_snapshot_p50", "long order load p50, snapshots", "µs", False),
        Figure("long_load_snapshot_p99", "long order load p99, snapshots", "µs", False),
        Figure("snapshot_speedup_p50", "snapshots: load p50 faster by", TIMES, True, _TWENTY),
        Figure("snapshot_speedup_p99", "snapshots: load p99 faster by", TIMES, True, _TWENTY),
        Figure("lag_p50", "lag p50 (ack → read model)", "ms", False),
        Figure(
            "lag_p99",
            "lag p99 (ack → read model)",
            "ms",
            False,
            (("max", 50.0, "sqlite"), ("max", 50.0, "postgres"), ("max", 50.0, "memory")),
        ),
        Figure("lag_rate", "lag run: commands/s achieved", "cmd/s", True),
        Figure(
            "rebuild_peak_mb",
            "rebuild memory peak (RSS)",
            "MB",
            False,
            (("max", 200.0, "sqlite"), ("max", 200.0, "postgres")),
        ),
        Figure("rebuild_rate", "rebuild in that process", "ev/s", True),
        Figure("hot_stream_1", "one order, 32 clients, 1 writer: AddItems/s", "cmd/s", True),
        Figure(
            "hot_stream_conflicts_1",
            "one order, 32 clients, 1 writer: 409 share",
            "%",
            False,
            (("max", 0.0, "sqlite"), ("max", 0.0, "postgres"), ("max", 0.0, "memory")),
        ),
        Figure("hot_stream_2", "one order, 32 clients, 2 writers: AddItems/s", "cmd/s", True),
        Figure(
            "hot_stream_conflicts_2",
            "one order, 32 clients, 2 writers: 409 share",
            "%",
            False,
            (("max", 10.0, "postgres"),),
        ),
        Figure("http_command_rps", "HTTP command requests/s", "req/s", True),
        Figure("http_command_p50", "HTTP command p50", "ms", False),
        Figure("http_command_p99", "HTTP command p99", "ms", False, _HTTP_P99),
        Figure("http_query_rps", "HTTP query requests/s", "req/s", True),
        Figure("http_query_p50", "HTTP query p50", "ms", False),
        Figure("http_query_p99", "HTTP query p99", "ms", False, _HTTP_P99),
        Figure("http_bare_rps", "HTTP bare FastAPI app (constant JSON) requests/s", "req/s", True),
        Figure("http_bare_p99", "HTTP bare FastAPI app p99", "ms", False),
        Figure(
            "http_command_share",
            "HTTP command requests/s, share of the bare app's",
            TIMES,
            True,
            (("min", 0.6, "sqlite"), ("min", 0.6, "postgres")),
        ),
        Figure(
            "http_query_share",
            "HTTP query requests/s, share of the bare app's",
            TIMES,
            True,
            (("min", 1.0, "sqlite"), ("min", 1.0, "postgres")),
        ),
    ]
    return figures


FIGURES = _figures()
FIGURES_BY_KEY = {figure.key: figure for figure in FIGURES}
