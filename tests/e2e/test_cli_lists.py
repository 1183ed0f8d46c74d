"""``orders orders`` without a flag lists every order; with flags, a customer's and/or a
status's; ``orders serve --demo`` starts a fresh store with the seed's orders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.e2e.server import free_port
from tests.e2e.test_cli import ORDERS, run


def create(tmp_path: Path, db: str, order_id: str, customer: str) -> None:
    created = run(
        "create-order",
        order_id,
        "--customer",
        customer,
        "--item",
        "Pen:1.25:2",
        cwd=tmp_path,
        db=db,
    )
    assert created.returncode == 0, created.stderr


def listed(tmp_path: Path, db: str, *flags: str) -> list[str]:
    result = run("orders", *flags, "--json", cwd=tmp_path, db=db)
    assert result.returncode == 0, result.stderr
    return [order["order_id"] for order in json.loads(result.stdout)["orders"]]


def test_orders_without_a_flag_lists_every_order(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    for n, customer in enumerate(["C-1", "C-2", "C-1"]):
        create(tmp_path, db, f"ORD-{n}", customer)
    assert run("submit", "ORD-2", cwd=tmp_path, db=db).returncode == 0

    assert listed(tmp_path, db) == ["ORD-0", "ORD-1", "ORD-2"]
    assert listed(tmp_path, db, "--customer", "C-1") == ["ORD-0", "ORD-2"]
    assert listed(tmp_path, db, "--customer", "C-1", "--status", "draft") == ["ORD-0"]
    assert listed(tmp_path, db, "--limit", "2") == ["ORD-0", "ORD-1"]
    table = run("orders", cwd=tmp_path, db=db)
    assert "ORD-1" in table.stdout
    assert "more: --cursor" not in table.stdout


def test_serve_with_demo_starts_with_the_seed_orders_on_an_empty_store(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    command = [ORDERS, "serve", "--port", str(port), "--db", db, "--demo"]
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        announced = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in announced
        assert "live dashboard" in announced
        # The demo's four events are the log's first four: read with that token.
        stats = httpx.get(
            f"http://127.0.0.1:{port}/stats/dashboard",
            headers={"Consistency-Token": "4"},
            timeout=30,
        ).json()
        assert stats["total_orders"] == 2
        assert stats["total_revenue"] == "1575.00"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200
        assert "Orders" in page.text
    finally:
        server.terminate()
        assert server.wait(30) == 0
