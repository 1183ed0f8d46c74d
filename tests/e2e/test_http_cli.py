"""`orders serve` and `orders project` as real processes: start, answer, feed, shut down cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import fresh_db_url, new_id
from tests.support.services import (
    ORDERS,
    Process,
    kill_all,
    read_response,
    received_by_server,
    refused,
    serve,
)
from tests.support.waiting import DEADLINE, until_sync

PEN = {"name": "Pen", "price": "2.00", "quantity": 3}


@pytest.fixture
def db_url(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    return fresh_db_url(backend_name, tmp_path_factory, request)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    kill_all(started)


def test_serve_answers_logs_each_request_and_stops_cleanly_on_sigterm(
    tmp_path: Path, db_url: str, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, db_url)
    with httpx.Client(base_url=url, limits=httpx.Limits(keepalive_expiry=2.0)) as client:
        order_id = new_id("ORD")
        created = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C", "items": [PEN]}
        )
        assert created.status_code == 201, created.text
        token = {"Consistency-Token": created.headers["Consistency-Token"]}
        assert client.get(f"/orders/{order_id}", headers=token).json()["total"] == "6.00"
        assert client.get("/readyz").json()["projections_mode"] == "in-process"
        assert client.post(f"/orders/{order_id}/items", json={"price": "1"}).status_code == 422

    assert processes[0].stop() == 0
    lines = processes[0].lines()
    requests = [line for line in lines if line.get("logger") == "orders.http.access"]
    create = next(line for line in requests if line["method"] == "POST" and line["status"] == 201)
    assert create["path"] == "/orders"
    assert create["order_id"] == order_id
    assert create["command"] == "CreateOrder"
    assert create["outcome"] == "ok"
    assert isinstance(create["latency_ms"], float)
    invalid = next(line for line in requests if line["status"] == 422)
    assert invalid["outcome"] == "validation-error"
    assert invalid["order_id"] == order_id
    assert any("closing the projections" in str(line["msg"]) for line in lines)


def test_a_separate_projection_worker_feeds_the_read_model(
    tmp_path: Path, db_url: str, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, db_url, "--no-projections")
    worker = Process("project", "--db", db_url, cwd=tmp_path)
    processes.append(worker)
    with httpx.Client(
        base_url=url, timeout=30, limits=httpx.Limits(keepalive_expiry=2.0)
    ) as client:
        ready = client.get("/readyz").json()
        assert ready["projections_mode"] == "external"
        for _ in range(5):
            order_id = new_id("ORD")
            created = client.post(
                "/orders", json={"order_id": order_id, "customer_id": "C-w", "items": [PEN]}
            )
            token = {"Consistency-Token": created.headers["Consistency-Token"]}
            seen = client.get(f"/orders/{order_id}", headers=token)
            assert seen.status_code == 200, seen.text
            assert seen.json()["item_count"] == 1
        ready = client.get("/readyz").json()
        assert ready["ready"] is True
        assert all(p["running"] is None and p["lag_events"] == 0 for p in ready["projections"])

    assert worker.stop() == 0
    assert any("projections running" in str(line["msg"]) for line in worker.lines())
    assert processes[0].stop() == 0


def test_in_flight_commands_finish_on_sigterm_and_stay_acknowledged(
    tmp_path: Path, db_url: str, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, db_url)
    port = int(url.rsplit(":", 1)[1])
    customer = new_id("C")
    acknowledged: set[str] = set()
    numbers = iter(range(1_000_000))  # shared by the client threads: next() is atomic enough
    stopped = threading.Event()

    def body(order_id: str) -> bytes:
        return json.dumps({"order_id": order_id, "customer_id": customer, "items": [PEN]}).encode()

    def client() -> None:  # creates orders until the server stops accepting connections
        while not stopped.is_set():
            order_id = f"{customer}-{next(numbers)}"
            try:
                response = httpx.post(
                    f"{url}/orders", content=body(order_id), timeout=60,
                    headers={"content-type": "application/json"},
                )  # fmt: skip
            except httpx.TransportError:
                return  # refused, or cut: the server had stopped accepting
            assert response.status_code == 201, response.text
            acknowledged.add(order_id)

    # Requests held in flight: headers and half the body sent, the rest only after SIGTERM.
    held = {f"{customer}-held-{n}": socket.create_connection(("127.0.0.1", port)) for n in range(4)}
    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        try:
            until_sync(lambda: len(acknowledged) >= 10, what="10 commands acknowledged")
            for order_id, sock in held.items():
                content = body(order_id)
                sock.sendall(
                    b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(content), content[:10])
                )
            until_sync(
                lambda: all(received_by_server(port, sock) for sock in held.values()),
                what="the held requests in the server's hands",
            )
            processes[0].popen.send_signal(signal.SIGTERM)
            until_sync(lambda: refused(port), what="the server refusing new connections")
            until_sync(
                lambda: "Waiting for connections to close" in processes[0].log.read_text(),
                what="the server waiting for the requests in flight",
            )
            assert processes[0].popen.poll() is None
            for order_id, sock in held.items():
                sock.sendall(body(order_id)[10:])
            for order_id, sock in held.items():
                with sock:
                    status, created = read_response(sock)
                assert status == 201, created
                assert created["order_id"] == order_id
                acknowledged.add(order_id)
        finally:
            stopped.set()
        for finished in clients:
            finished.result()
    assert processes[0].popen.wait(DEADLINE) == 0  # the SIGTERM above: a clean exit

    url = serve(processes, tmp_path, db_url)  # a new process over the same database
    with httpx.Client(base_url=url, limits=httpx.Limits(keepalive_expiry=2.0)) as client_:
        head = client_.post("/orders", json={"customer_id": customer, "items": []})
        token = {"Consistency-Token": head.headers["Consistency-Token"]}
        stored: set[str] = set()
        cursor = None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = client_.get(f"/customers/{customer}/orders", params=params, headers=token)
            assert page.status_code == 200, page.text
            stored |= {o["order_id"] for o in page.json()["orders"]}
            if (cursor := page.json()["next_cursor"]) is None:
                break
    assert set(held) <= stored
    assert acknowledged <= stored


def run_orders(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``orders *args`` to its end, its output captured (one line per message: wide)."""
    return subprocess.run(
        [ORDERS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("command", "db"),
    [
        ("serve", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"),
        ("project", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"),
        ("serve", "mysql://localhost/orders"),
    ],
)
def test_an_unreachable_store_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, command: str, db: str
) -> None:
    port = ["--port", "0"] if command == "serve" else []
    result = run_orders(tmp_path, command, "--db", db, *port)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("error:")
    assert len(result.stdout.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_workers_share_the_port_read_each_others_writes_and_stop_together(
    tmp_path: Path, request: pytest.FixtureRequest, processes: list[Process]
) -> None:
    from tests.support.postgres import fresh_url

    url = serve(processes, tmp_path, fresh_url(request), "--workers", "2")
    created = []
    for n in range(20):
        # a connection per request, so that both workers take some
        with httpx.Client(base_url=url) as client:
            body = {"order_id": new_id("ORD"), "customer_id": f"C{n}", "items": [PEN]}
            answer = client.post("/orders", json=body)
            assert answer.status_code == 201, answer.text
            created.append((body["order_id"], answer.headers["Consistency-Token"]))
    for order_id, token in created:
        with httpx.Client(base_url=url) as client:
            read = client.get(f"/orders/{order_id}", headers={"Consistency-Token": token})
            assert read.status_code == 200, read.text
            assert read.json()["total"] == "6.00"
    (parent,) = processes
    started = {
        line["msg"] for line in parent.lines() if str(line["msg"]).startswith("Started server")
    }
    assert len(started) == 2  # one line per worker process, each naming its pid
    assert parent.stop() == 0
    stopped = [line for line in parent.lines() if str(line["msg"]).startswith("server stopped")]
    assert len(stopped) == 2


def test_workers_are_refused_on_sqlite_with_a_clear_message(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/o.db"
    result = run_orders(tmp_path, "serve", "--workers", "2", "--port", "0", "--db", db)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--workers needs a PostgreSQL store" in result.stdout
    assert not (tmp_path / "o.db").exists()
