"""An SQLite database that cannot be written, under a live ``orders serve`` process: locked by
another connection, or refusing every write (a full disk). While it lasts every command is
answered 503 with ``Retry-After`` within about 2 s (never a hang, never a 500) and queries are
still served; once it ends the same process serves commands again; nothing acknowledged is lost
and the read model equals a full replay."""

from __future__ import annotations

import resource
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.load import (
    Load,
    assert_read_model_is_a_replay,
    assert_store_unavailable,
    client,
)
from tests.support.services import Process, serve
from tests.support.waiting import until_sync


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.db'}"


def assert_commands_refused_and_queries_served(url: str) -> None:
    with client(url) as http:
        assert_store_unavailable(http.post("/orders", json={"customer_id": "C", "items": []}))
        assert http.get("/orders", params={"status": "draft"}).status_code == 200
        assert http.get("/healthz").status_code == 200


async def ride_out(
    tmp_path: Path,
    processes: list[Process],
    fault_begins: Callable[[], object],
    fault_ends: Callable[[], object],
) -> None:
    """Run load against a service, let the fault begin and end, and check what it answered."""
    db_url = sqlite_url(tmp_path)
    url = serve(processes, tmp_path, db_url)
    service = processes[0]
    load = Load(url, customer=f"C-{uuid.uuid4().hex[:8]}").start()
    try:
        load.wait_for_more(20, what="20 orders acknowledged")
        fault_begins()
        load.wait_for_refusals(4, what="503s while the fault lasts")
        assert_commands_refused_and_queries_served(url)
        fault_ends()
        load.wait_for_more(20, what="commands served again once the fault ended")
    finally:
        load.stop()
    load.assert_only_refused_cleanly()
    assert service.popen.poll() is None  # the same process throughout
    load.assert_nothing_lost()
    with client(url) as http:
        until_sync(lambda: http.get("/readyz").status_code == 200, what="ready")
    assert service.stop() == 0
    await assert_read_model_is_a_replay(db_url)


async def test_a_write_lock_held_by_another_connection_is_ridden_out(
    tmp_path: Path, processes: list[Process]
) -> None:
    # Another program (an sqlite3 shell, a backup) holds the write lock of the event store.
    holder = sqlite3.connect(tmp_path / "orders.db", isolation_level=None, check_same_thread=False)
    try:
        await ride_out(
            tmp_path,
            processes,
            lambda: holder.execute("BEGIN IMMEDIATE"),
            lambda: holder.execute("ROLLBACK"),
        )
    finally:
        holder.close()


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
async def test_a_database_that_refuses_every_write_is_ridden_out(
    tmp_path: Path, processes: list[Process]
) -> None:
    # The service may write nothing more to any file (its largest file size is 1 byte): a
    # write fails as on a full disk. Its own log lines are lost meanwhile, as they would be.
    limits: list[tuple[int, int]] = []

    def refuse_writes() -> None:
        pid = processes[0].popen.pid
        limits.append(resource.prlimit(pid, resource.RLIMIT_FSIZE))
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, limits[0][1]))

    def allow_writes() -> None:
        resource.prlimit(processes[0].popen.pid, resource.RLIMIT_FSIZE, limits[0])

    await ride_out(tmp_path, processes, refuse_writes, allow_writes)


async def test_a_projection_whose_read_model_stays_locked_is_not_ready_between_its_retries(
    tmp_path: Path, processes: list[Process]
) -> None:
    db_url = sqlite_url(tmp_path)
    url = serve(processes, tmp_path, db_url)
    with client(url) as http:
        assert http.post("/orders", json={"customer_id": "C", "items": []}).status_code == 201
        until_sync(lambda: http.get("/readyz").status_code == 200, what="ready")
        # Another program holds the write lock of the read model: every projection batch
        # fails after the busy timeout, and the projection retries after each.
        holder = sqlite3.connect(tmp_path / "orders.read.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            created = http.post("/orders", json={"customer_id": "C", "items": []})
            assert created.status_code == 201  # the event store is not locked
            until_sync(lambda: http.get("/readyz").status_code == 503, what="not ready")
            first = restarts(http.get("/readyz").json())
            seen: list[tuple[int, set[str]]] = []

            def retried_twice() -> bool:
                ready = http.get("/readyz")
                states = {p["state"] for p in ready.json()["projections"]}
                seen.append((ready.status_code, states))
                return restarts(ready.json()) >= first + 2 * len(ready.json()["projections"])

            until_sync(retried_twice, what="two more attempts of each projection")
            assert {status for status, _ in seen} == {503}, seen
            assert set().union(*(states for _, states in seen)) <= {
                "backing_off",
                "retrying",
                "running",
            }
        finally:
            holder.close()
        until_sync(lambda: http.get("/readyz").status_code == 200, what="ready once unlocked")
        token = {"Consistency-Token": created.headers["Consistency-Token"]}
        assert http.get(f"/orders/{created.json()['order_id']}", headers=token).status_code == 200
    assert processes[0].stop() == 0
    await assert_read_model_is_a_replay(db_url)


def restarts(ready: dict[str, Any]) -> int:
    return sum(int(p["restarts"]) for p in ready["projections"])
