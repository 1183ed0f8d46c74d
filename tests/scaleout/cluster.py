"""A scale-out deployment on this machine, as separate processes: relays, query nodes and
projection workers over one PostgreSQL database and one NATS server, plus a bounded command
load and the checks every fault test ends with."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cqrskit.backends import open_backend, open_read_store
from tests.e2e.server import free_port
from tests.support.orders import full_replay, snapshot

ORDERS = str(Path(sys.executable).with_name("orders"))
PEN = {"name": "Pen", "price": "2.00", "quantity": 3}
BOOK = {"name": "Book", "price": "19.99", "quantity": 1}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


class OrdersProcess:
    """One ``orders`` subprocess (its output in a file), which can be killed and restarted."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        self.cwd = cwd
        self.env = env
        self.log = cwd / f"{args[0]}-{time.monotonic_ns()}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.popen = subprocess.Popen(
                [ORDERS, *self.args], cwd=self.cwd, env=self.env,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Node(OrdersProcess):
    """``orders serve`` as a query node with its own read model."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], port: int, read_db: str):
        self.port = port
        self.read_db = read_db
        super().__init__(args, cwd, env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> Node:
        def healthy() -> bool:
            assert self.alive, self.output()
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout, f"node {self.port} to serve")
        return self


@dataclass
class Cluster:
    """Processes of one deployment: ``db_url`` (PostgreSQL), ``nats_url``, ``stream``."""

    tmp_path: Path
    db_url: str
    nats_url: str
    stream: str
    processes: list[OrdersProcess] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "CQRSKIT_CONSISTENCY_TIMEOUT": "30"}
        for name in ("CQRSKIT_DB", "CQRSKIT_NATS_URL", "CQRSKIT_READ_DB", "CQRSKIT_NODE_NAME"):
            env.pop(name, None)
        return env

    def _common(self) -> list[str]:
        return ["--db", self.db_url, "--nats", self.nats_url, "--stream", self.stream]

    def relay(self) -> OrdersProcess:
        process = OrdersProcess(["relay", *self._common()], self.tmp_path, self._env())
        self.processes.append(process)
        return process

    def node(self, name: str) -> Node:
        read_db = f"sqlite:///{self.tmp_path / f'{name}.read.db'}"
        port = free_port()
        args = ["serve", "--port", str(port), *self._common(), "--read-db", read_db]
        node = Node([*args, "--node-name", name], self.tmp_path, self._env(), port, read_db)
        self.processes.append(node)
        return node.wait_ready()

    def service(self, name: str) -> Node:
        """``orders serve --nats`` without a read database of its own: commands, and queries
        from the read model in PostgreSQL that the partitioned workers keep."""
        port = free_port()
        args = ["serve", "--port", str(port), *self._common(), "--no-projections"]
        node = Node(args, self.tmp_path, self._env(), port, self.db_url)
        self.processes.append(node)
        return node.wait_ready()

    def workers(self, count: int) -> list[OrdersProcess]:
        started = [
            OrdersProcess(["project", *self._common()], self.tmp_path, self._env())
            for _ in range(count)
        ]
        self.processes.extend(started)
        return started

    def command(
        self, *args: str, partitioned: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """``orders <args> --db …`` (and ``--nats … --stream …`` when ``partitioned``) started
        against this deployment, with ``env`` added to its environment, its output (stdout and
        stderr) read with ``communicate``."""
        options = self._common() if partitioned else ["--db", self.db_url]
        return subprocess.Popen(
            [ORDERS, *args, *options], cwd=self.tmp_path, env={**self._env(), **(env or {})},
            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def partitioned_env(self) -> dict[str, str]:
        """The environment that makes any ``orders`` command one over the workers' read model."""
        return {
            "CQRSKIT_PARTITIONED": "1",
            "CQRSKIT_NATS_URL": self.nats_url,
            "CQRSKIT_NATS_STREAM": self.stream,
        }

    def shut_down(self) -> None:
        for process in self.processes:
            if process.alive:
                assert process.popen is not None
                process.popen.kill()
                process.popen.wait(10)

    def head_position(self) -> int:
        async def head() -> int:
            backend = await open_backend(self.db_url)
            try:
                return await backend.events.head_position()
            finally:
                await backend.close()

        return asyncio.run(head())

    def expected_read_model(self) -> dict[str, list[dict[str, Any]]]:
        """The read model a full replay of the event store gives."""

        async def replay() -> dict[str, list[dict[str, Any]]]:
            backend = await open_backend(self.db_url)
            try:
                return await full_replay(backend.events)
            finally:
                await backend.close()

        return asyncio.run(replay())


def read_model_of(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every Orders read-model table of the read store at ``url``."""

    async def read() -> dict[str, list[dict[str, Any]]]:
        store = await open_read_store(url)
        try:
            return await snapshot(store)
        finally:
            await store.close()

    return asyncio.run(read())


def wait_for_token(node: Node, position: int, timeout: float = 60.0) -> None:
    """Wait until ``node`` answers a query carrying ``position`` as its consistency token."""

    def answered() -> bool:
        assert node.alive, node.output()
        try:
            response = httpx.get(
                f"{node.url}/stats/dashboard",
                headers={"Consistency-Token": str(position)},
                timeout=35,
            )
        except httpx.TransportError:
            return False
        return response.status_code == 200

    wait_until(answered, timeout, f"node {node.port} to reach position {position}")


@dataclass
class Load:
    """A bounded command load over HTTP against some nodes, in a background thread: orders
    created, given an item and submitted. Every acknowledged command is remembered."""

    nodes: list[Node]
    orders: int
    prefix: str
    acknowledged: list[tuple[str, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, clients: int = 8) -> Load:
        self._thread = threading.Thread(target=self._run, args=(clients,), daemon=True)
        self._thread.start()
        return self

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def join(self, timeout: float = 300.0) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load did not finish"

    def _run(self, clients: int) -> None:
        threads = [
            threading.Thread(target=self._client, args=(n, clients), daemon=True)
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client(self, index: int, clients: int) -> None:
        chooser = random.Random(index)
        with httpx.Client(timeout=30, limits=httpx.Limits(keepalive_expiry=1.0)) as client:
            for n in range(index, self.orders, clients):
                order_id = f"{self.prefix}-{n}"
                created = {"order_id": order_id, "customer_id": "C", "items": [PEN]}
                steps: list[tuple[str, str, dict[str, Any]]] = [
                    ("create", "/orders", created),
                    ("add", f"/orders/{order_id}/items", BOOK),
                ]
                if n % 2 == 0:
                    steps.append(("submit", f"/orders/{order_id}/submit", {}))
                for kind, path, body in steps:
                    self._send(client, chooser, order_id, kind, path, body)

    def _send(
        self,
        client: httpx.Client,
        chooser: random.Random,
        order_id: str,
        kind: str,
        path: str,
        body: dict[str, Any],
    ) -> None:
        # The same idempotency key on every try: a retry after a lost answer (a node killed
        # mid-request) never applies the command twice.
        key = f"{order_id}-{kind}"
        for _ in range(60):
            live = [node for node in self.nodes if node.alive] or self.nodes
            node = chooser.choice(live)
            try:
                response = client.post(
                    f"{node.url}{path}", json=body, headers={"Idempotency-Key": key}
                )
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if response.status_code in (200, 201):
                token = int(response.headers["Consistency-Token"])
                with self._lock:
                    self.acknowledged.append((order_id, kind, token))
                return
            if response.status_code == 503:
                time.sleep(0.05)
                continue
            with self._lock:
                self.errors.append(f"{kind} {order_id}: {response.status_code} {response.text}")
            return
        with self._lock:
            self.errors.append(f"{kind} {order_id}: no node answered")

    def wait_for(self, count: int, timeout: float = 120.0) -> None:
        wait_until(lambda: self.count >= count, timeout, f"{count} acknowledged commands")


def check_every_node(cluster: Cluster, nodes: list[Node], load: Load) -> None:
    """Every acknowledged command is in every node's read model exactly once, and the nodes
    agree: each read model equals a full replay of the event store."""
    assert load.errors == []
    head = cluster.head_position()
    for node in nodes:
        wait_for_token(node, head)
    expected = cluster.expected_read_model()
    orders = {row["order_id"]: row for row in expected["orders"]}
    for order_id, kind, _ in load.acknowledged:
        row = orders[order_id]
        if kind == "add":
            assert row["item_count"] == 2, row
        if kind == "submit":
            assert row["status"] == "submitted", row
    created = {order_id for order_id, kind, _ in load.acknowledged if kind == "create"}
    assert len(created) == load.orders
    (dashboard,) = expected["dashboard_stats"]
    assert dashboard["total_orders"] == len(created)
    for node in nodes:
        assert read_model_of(node.read_db) == expected, f"node {node.port} differs"
