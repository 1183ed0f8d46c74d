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
    """This process's RSS high-water mark. ``VmHWM``, not ``ru_maxrss``: Linux keeps
    ``ru_maxrss`` across ``execve``, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


async def main(url: str, orders: int) -> dict[str, object]:
    db = Database("sqlite" if url.startswith("sqlite") else "postgres", url, {})
    app = await cq.open_app(db)
    try:
        baseline = current_rss_mb()
        expected = w.Expected.for_orders(orders)
        curve: list[tuple[str, int, float]] = []  # (projection, batches, RSS MB) as it goes
        every = max(1, expected.events // 1000 // 10)  # about ten samples per projection
        batches = 0

        async def sample(position: int, name: str = "") -> None:
            nonlocal batches
            batches += 1
            if batches % every == 1 or every == 1:
                curve.append((name, batches, round(current_rss_mb(), 1)))

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
