"""Rebuild the Orders read model in this process and report its RSS high-water mark.

Run by the suite as a separate process, so that the peak is the rebuild's own:
``python -m benchmarks.rebuild_peak URL ORDERS`` prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from benchmarks import cqrskit_bench as cq
from benchmarks import workload as w
from benchmarks.databases import Database


def current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


async def main(url: str, orders: int) -> dict[str, object]:
    db = Database("sqlite" if url.startswith("sqlite") else "postgres", url, {})
    app = await cq.open_app(db)
    try:
        baseline = current_rss_mb()
        expected = w.Expected.for_orders(orders)
        curve: list[tuple[str, int, float]] = []  # (projection, position, RSS MB) as it goes
        every = max(1, expected.events // 10)

        async def sample(position: int, name: str = "") -> None:
            if position // every != (curve[-1][1] // every if curve else -1):
                curve.append((name, position, round(current_rss_mb(), 1)))

        start = time.perf_counter()
        for runner in app.runners:
            name = runner.projection.name
            await runner.rebuild(lambda position, name=name: sample(position, name))
        seconds = time.perf_counter() - start
        await cq.verify_read_model(app, expected, [0, orders // 2, orders - 1])
    finally:
        await app.close()
    return {
        "events": expected.events,
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
        "rss_curve": curve,
    }


if __name__ == "__main__":
    url, orders = sys.argv[1], int(sys.argv[2])
    report = asyncio.run(main(url, orders))
    print(json.dumps(report))
