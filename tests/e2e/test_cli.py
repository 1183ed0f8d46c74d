"""The ``orders`` command as a user drives it: real processes on a real SQLite file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import fresh_url

ORDERS = str(Path(sys.executable).with_name("orders"))


def run(*args: str, cwd: Path, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("CQRSKIT_DB", None)
    if db is not None:
        env["CQRSKIT_DB"] = db
    return subprocess.run(
        [ORDERS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return fresh_url(request)
    return f"sqlite:///{tmp_path / 'orders.db'}"


def test_demo_plays_the_seed_scenario_on_a_fresh_sqlite_database(tmp_path: Path) -> None:
    for _ in range(2):  # a second run starts from a fresh database again
        result = run("demo", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (tmp_path / ".cqrskit" / "demo.db").exists()
    for command in ("CreateOrder ORD-001", "AddItems ORD-001", "SubmitOrder ORD-001"):
        assert command in out
    for event in ("OrderCreated", "ItemsAdded", "OrderSubmitted"):
        assert event in out
    assert re.search(r"total\s+1176\.00", out)
    assert re.search(r"status\s+submitted", out)
    dashboard = out[out.index("Dashboard stats") :]
    for figure in (
        "total orders        │       2",
        "1575.00",
        "draft orders        │       1",
        "submitted orders    │       1",
        "787.50",
    ):
        assert figure in dashboard
    daily = out[out.index("Daily stats") :]
    assert "1176.00" in daily
    assert "Demo complete" in out


def test_commands_queries_and_event_log(tmp_path: Path, db: str) -> None:
    created = run(
        "create-order",
        "ORD-9",
        "--customer",
        "C-1",
        "--item",
        "Laptop:999.00:1",
        "--item",
        "Mouse:49.00:2",
        "--json",
        cwd=tmp_path,
        db=db,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["version"] == 1
    assert (
        run(
            "add-item", "ORD-9", "--name", "Keyboard", "--price", "79", "--db", db, cwd=tmp_path
        ).returncode
        == 0
    )
    assert run("submit", "ORD-9", cwd=tmp_path, db=db).returncode == 0

    order = json.loads(run("order", "ORD-9", "--json", cwd=tmp_path, db=db).stdout)
    assert order["total"] == "1176.00"
    assert order["status"] == "submitted"
    assert order["item_count"] == 3

    page = json.loads(run("orders", "--customer", "C-1", "--json", cwd=tmp_path, db=db).stdout)
    assert [o["order_id"] for o in page["orders"]] == ["ORD-9"]
    page = json.loads(run("orders", "--status", "draft", "--json", cwd=tmp_path, db=db).stdout)
    assert page["orders"] == []

    stats = json.loads(run("stats", "--json", cwd=tmp_path, db=db).stdout)
    assert stats["dashboard"]["total_revenue"] == "1176.00"
    assert stats["daily"][0]["revenue"] == "1176.00"

    log = json.loads(run("events", "ORD-9", "--json", cwd=tmp_path, db=db).stdout)
    assert [e["type"] for e in log] == ["OrderCreated", "ItemsAdded", "OrderSubmitted"]
    assert [e["version"] for e in log] == [1, 2, 3]


def test_a_rejected_command_prints_one_line_exits_non_zero_and_writes_nothing(
    tmp_path: Path, db: str
) -> None:
    assert (
        run("create-order", "ORD-1", "-c", "C", "-i", "Pen:1.50:1", cwd=tmp_path, db=db).returncode
        == 0
    )
    assert run("submit", "ORD-1", cwd=tmp_path, db=db).returncode == 0
    before = run("events", "--json", cwd=tmp_path, db=db).stdout

    rejected = run("submit", "ORD-1", cwd=tmp_path, db=db)
    assert rejected.returncode == 1
    assert rejected.stdout.strip().splitlines() == ["error: order 'ORD-1' is already submitted"]
    assert "Traceback" not in rejected.stdout + rejected.stderr

    missing = run("add-item", "ORD-404", "--name", "Pen", "--price", "1", cwd=tmp_path, db=db)
    assert missing.returncode == 1
    assert "not found" in missing.stdout

    invalid = run("add-item", "ORD-1", "--name", "Pen", "--price", "0.001", cwd=tmp_path, db=db)
    assert invalid.returncode == 2
    assert "at most two decimal places" in invalid.stdout

    assert run("events", "--json", cwd=tmp_path, db=db).stdout == before


def test_projections_status_and_rebuild(tmp_path: Path, db: str) -> None:
    for n in range(5):
        run("create-order", f"ORD-{n}", "-c", "C", "-i", "Pen:2.00:1", cwd=tmp_path, db=db)
    before = json.loads(run("stats", "--json", cwd=tmp_path, db=db).stdout)
    status = json.loads(run("projections", "status", "--json", cwd=tmp_path, db=db).stdout)
    assert {row["projection"] for row in status} == {"orders", "order_stats"}
    assert all(row["position"] == row["head"] for row in status)

    rebuilt = run("projections", "rebuild", cwd=tmp_path, db=db)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "orders" in rebuilt.stdout
    assert "order_stats" in rebuilt.stdout
    assert json.loads(run("stats", "--json", cwd=tmp_path, db=db).stdout) == before
    assert before["dashboard"]["total_orders"] == 5


def test_an_unsupported_store_url_is_one_clear_line(tmp_path: Path) -> None:
    result = run("stats", "--db", "mysql://localhost/orders", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout.startswith("error: unsupported store URL")


def test_demo_and_migrate_run_on_postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = fresh_url(request)
    migrated = run("db", "migrate", cwd=tmp_path, db=url)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "schema is up to date" in migrated.stdout
    played = run("demo", cwd=tmp_path, db=url)
    assert played.returncode == 0, played.stdout + played.stderr
    assert re.search(r"total\s+1176\.00", played.stdout)
    dashboard = played.stdout[played.stdout.index("Dashboard stats") :]
    assert "1575.00" in dashboard
    assert "787.50" in dashboard
    again = run("demo", cwd=tmp_path, db=url)  # an explicit database is never wiped
    assert again.returncode == 1
    assert "the demo needs an empty store" in again.stdout
