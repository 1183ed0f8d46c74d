"""Profiles of cqrskit's hot paths with py-spy (every thread, so the SQLite writer too).

``python -m benchmarks.profile [--backends sqlite,postgres] [--orders 5000]
[--store-orders 20000]`` fills a store,
then runs each scenario in a child process under ``py-spy record`` and writes, per scenario,
the functions that take the most time (own and inclusive) to ``benchmarks/profiles/``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks import cqrskit_bench as cq
from benchmarks.databases import Database, databases

OUT = Path(__file__).parent / "profiles"
SCENARIOS = ("commands_1", "commands_64", "batch", "rebuild", "load", "queries", "http")
HTTP_SECONDS = 8.0


async def target(scenario: str, url: str, orders: int) -> None:
    """The work profiled: one scenario on an already filled store (except for commands)."""
    db = Database("sqlite" if url.startswith("sqlite") else "postgres", url, {})
    if scenario in ("commands_1", "commands_64"):
        clients = 1 if scenario == "commands_1" else 64
        await cq.commands(db, orders, clients, verify=False)
        return
    if scenario == "batch":
        await cq.batch_append(db, orders // 5)
        return
    app = await cq.open_app(db)
    try:
        if scenario == "rebuild":
            for _ in range(3):
                await cq.projection_build(app)
        elif scenario == "load":
            await cq.load_latencies(app, list(range(orders)))
        else:
            await cq.query_latencies(app, orders, 5000)
    finally:
        await app.close()


def summarise(raw: Path, top: int = 30) -> str:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        path = " < ".join(reversed(frames[-4:-1]))
        callers.setdefault(frames[-1], Counter())[path] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "where the top own-time functions are called from:"]
    for frame, _ in own.most_common(8):
        lines.append(f"  {frame}")
        for path, n in callers[frame].most_common(3):
            lines.append(f"    {100 * n / total:5.1f}%  < {path}")
    lines += ["", "inclusive time:"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def record(scenario: str, db: Database, orders: int) -> Path:
    OUT.mkdir(exist_ok=True)
    raw = OUT / f"{db.backend}-{scenario}.raw.txt"
    command = [
        str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
        "--rate", "250", "--function", "--nonblocking", "-o", str(raw), "--",
        sys.executable, "-m", "benchmarks.profile", "--target", scenario, db.url, str(orders),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    summary = OUT / f"{db.backend}-{scenario}.txt"
    summary.write_text(summarise(raw))
    raw.unlink()
    return summary


def record_http(db: Database, scratch: Path) -> Path:
    """Profile ``orders serve`` while the load generator sends it commands."""
    from benchmarks.http_bench import free_port, load, start_server, stop_server

    OUT.mkdir(exist_ok=True)
    raw = OUT / f"{db.backend}-http.raw.txt"
    port = free_port()
    server = start_server(db.url, port, scratch / "serve.log")
    try:
        command = [
            str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
            "--rate", "250", "--function", "--nonblocking", "-o", str(raw),
            "--duration", str(int(HTTP_SECONDS)), "--pid", str(server.pid),
        ]  # fmt: skip
        spy = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load(port, "command", 64, HTTP_SECONDS, None)
        spy.wait(timeout=60)
    finally:
        stop_server(server)
    summary = OUT / f"{db.backend}-http.txt"
    summary.write_text(summarise(raw))
    raw.unlink()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--orders", type=int, default=5000, help="orders run as commands")
    parser.add_argument("--store-orders", type=int, default=20_000, help="orders read back")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--target", nargs=3, metavar=("SCENARIO", "URL", "ORDERS"))
    args = parser.parse_args()
    if args.target:
        scenario, url, orders = args.target
        asyncio.run(target(scenario, url, int(orders)))
        return
    with databases() as dbs:
        for backend in args.backends.split(","):
            filled = dbs.fresh(backend, "profile")
            asyncio.run(cq.prefill(filled, args.store_orders))
            for scenario in args.scenarios.split(","):
                if scenario == "http":
                    db = dbs.fresh(backend, "http")
                    print(f"{backend} http: {record_http(db, dbs.scratch)}", flush=True)
                    dbs.drop(db)
                    continue
                fresh = scenario.startswith("commands") or scenario == "batch"
                db = dbs.fresh(backend, scenario) if fresh else filled
                orders = args.orders if fresh else args.store_orders
                print(f"{backend} {scenario}: {record(scenario, db, orders)}", flush=True)
                if fresh:
                    dbs.drop(db)
            dbs.drop(filled)


if __name__ == "__main__":
    main()
