"""`orders serve` and `orders project` as real processes: start, answer, feed, shut down cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import fresh_db_url, new_id
from tests.e2e.server import free_port

ORDERS = str(Path(sys.executable).with_name("orders"))
PEN = {"name": "Pen", "price": "2.00", "quantity": 3}


class Process:
    """An ``orders`` subprocess with its stderr (JSON log lines) in a file."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.log = cwd / f"orders-{args[0]}-{time.monotonic_ns()}.log"
        env = {**os.environ, "CQRSKIT_CONSISTENCY_TIMEOUT": "10"}
        env.pop("CQRSKIT_DB", None)
        with self.log.open("wb") as sink:
            self.popen = subprocess.Popen(
                [ORDERS, *args], cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT
            )

    def lines(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


@pytest.fixture
def db_url(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    return fresh_db_url(backend_name, tmp_path_factory, request)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)


def serve(processes: list[Process], tmp_path: Path, db_url: str, *extra: str) -> str:
    port = free_port()
    process = Process("serve", "--port", str(port), "--db", db_url, *extra, cwd=tmp_path)
    processes.append(process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.popen.poll() is None, process.log.read_text()
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return url
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"orders serve did not answer: {process.log.read_text()}")


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
    customer = new_id("C")

    def create(n: int) -> str | None:
        body = {"order_id": f"{customer}-{n}", "customer_id": customer, "items": [PEN]}
        try:
            response = httpx.post(f"{url}/orders", json=body, timeout=30)
        except httpx.TransportError:
            return None  # refused: the server had stopped accepting
        assert response.status_code == 201, response.text
        return str(body["order_id"])

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(create, n) for n in range(200)]
        time.sleep(0.2)
        processes[0].popen.send_signal(signal.SIGTERM)
        acknowledged = {f.result() for f in futures} - {None}
    assert processes[0].stop() == 0
    assert acknowledged

    url = serve(processes, tmp_path, db_url)  # a new process over the same database
    with httpx.Client(base_url=url, limits=httpx.Limits(keepalive_expiry=2.0)) as client:
        head = client.post("/orders", json={"customer_id": customer, "items": []})
        token = {"Consistency-Token": head.headers["Consistency-Token"]}
        page = client.get(f"/customers/{customer}/orders", params={"limit": 500}, headers=token)
        stored = {o["order_id"] for o in page.json()["orders"]}
    assert acknowledged <= stored


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
    port = ["--port", str(free_port())] if command == "serve" else []
    result = subprocess.run(
        [ORDERS, command, "--db", db, *port],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("error:")
    assert len(result.stdout.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr
