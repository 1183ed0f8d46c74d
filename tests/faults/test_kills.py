"""``kill -9`` under load, on SQLite and on PostgreSQL (the suite's own server): of the service
(a new one over the same database carries on), and of a projection worker (another worker
carries on: on PostgreSQL one already standing by for the lease, with nothing restarted).
Nothing acknowledged is lost, and the read model equals a full replay."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

from tests.faults.load import Load, assert_read_model_is_a_replay, client, stored_orders
from tests.support.services import Process, serve
from tests.support.waiting import until_sync


def kill(process: Process) -> None:
    process.popen.send_signal(signal.SIGKILL)
    assert process.popen.wait(60) == -signal.SIGKILL


def follows(url: str, customer: str) -> None:
    """Wait until the read model behind ``url`` has every write up to a new one."""
    with client(url) as http:
        created = http.post("/orders", json={"customer_id": customer, "items": []})
        assert created.status_code == 201, created.text
        stored_orders(url, customer, created.headers["Consistency-Token"])


def check_nothing_lost(url: str, load: Load) -> None:
    assert not load.errors
    with client(url) as http:
        last = http.post("/orders", json={"customer_id": load.customer, "items": []})
        assert last.status_code == 201, last.text
    assert load.acknowledged <= stored_orders(url, load.customer, last.headers["Consistency-Token"])


async def test_a_service_killed_under_load_loses_nothing_it_acknowledged(
    db_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, db_url)
    load = Load(url, customer=f"C-{uuid.uuid4().hex[:8]}", clients=6).start()
    try:
        load.wait_for_more(30, what="30 orders acknowledged")
        kill(processes[0])
        load.url = url = serve(processes, tmp_path, db_url)  # a new process, same database
        load.wait_for_more(20, what="the new service serving commands")
    finally:
        load.stop()
    assert not load.errors
    assert set(load.statuses()) <= {201}, load.statuses()
    load.assert_nothing_lost()
    with client(url) as http:
        until_sync(lambda: http.get("/readyz").status_code == 200, what="ready")
    assert processes[1].stop() == 0
    await assert_read_model_is_a_replay(db_url)


async def test_a_projection_worker_killed_under_load_is_taken_over(
    db_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, db_url, "--no-projections")
    customer = f"C-{uuid.uuid4().hex[:8]}"
    worker = Process("project", "--db", db_url, cwd=tmp_path)
    processes.append(worker)
    follows(url, customer)  # the first worker runs the projections
    leased = db_url.startswith("postgresql")
    if leased:  # a second one stands by for their leases
        processes.append(Process("project", "--db", db_url, cwd=tmp_path))
    load = Load(url, customer=customer).start()
    try:
        load.wait_for_more(30, what="30 orders acknowledged")
        kill(worker)
        if not leased:  # no leases on SQLite: the worker is started again
            processes.append(Process("project", "--db", db_url, cwd=tmp_path))
        load.wait_for_more(20, what="commands served while the worker is replaced")
    finally:
        load.stop()
    load.assert_only_refused_cleanly()
    assert set(load.statuses()) <= {201}, load.statuses()
    load.assert_nothing_lost()
    with client(url) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert all(p["lag_events"] == 0 for p in ready.json()["projections"])
    for process in processes:
        if process is not worker:
            assert process.stop() == 0
    await assert_read_model_is_a_replay(db_url)
