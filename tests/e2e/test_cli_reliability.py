"""The ``orders`` command with hostile text, mistyped paths, long logs and a reset: real
processes on real databases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

import orders.render
from orders.cli import app
from tests.e2e.test_cli import ORDERS, run
from tests.support.postgres import fresh_url

HOSTILE = ("M-[/]", "C-[red]z", "Pen :b: [bold]x[/bold]")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return fresh_url(request)
    return f"sqlite:///{tmp_path / 'orders.db'}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def test_stored_and_user_text_is_shown_verbatim_never_as_markup(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    order_id, customer, name = HOSTILE

    created = ok(
        run("create-order", order_id, "-c", customer, "-i", f"{name}:1.50:2", cwd=tmp_path, db=db)
    )
    shown = ok(run("order", order_id, cwd=tmp_path, db=db))
    listed = ok(run("orders", "--customer", customer, cwd=tmp_path, db=db))
    logged = ok(run("events", order_id, cwd=tmp_path, db=db))
    refused = run("submit", ":b:", cwd=tmp_path, db=db)

    assert f"order-{order_id} v1" in created
    for text in HOSTILE:
        assert text in shown
    assert order_id in listed
    assert customer in listed
    assert "[bold]x[/bold]" in logged
    assert refused.returncode == 1
    assert refused.stdout.strip() == "error: order ':b:' not found"
    assert "🅱" not in shown + refused.stdout


def test_a_rendering_failure_after_a_write_still_says_ok_and_exits_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr(orders.render, "produced_events_table", broken)
    db = f"sqlite:///{tmp_path / 'orders.db'}"

    result = CliRunner().invoke(app, ["create-order", "ORD-R", "-c", "C", "--db", db])

    assert result.exit_code == 0, result.output
    assert "ok CreateOrder → order-ORD-R v1" in result.output
    assert "could not be shown" in result.output
    assert ok(run("events", "ORD-R", cwd=tmp_path, db=db)).count("OrderCreated") == 1


def test_read_only_commands_never_create_a_store_where_none_is(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "orders.db"
    for command in (
        ["stats"],
        ["order", "ORD-1"],
        ["orders", "--status", "draft"],
        ["events"],
        ["projections", "status"],
        ["projections", "rebuild"],
    ):
        result = run(*command, "--db", str(missing), cwd=tmp_path)
        assert result.returncode == 3, result.stdout + result.stderr
        assert result.stdout.startswith(f"error: no event store at {missing}: check --db")
    assert not missing.parent.exists()


def test_a_command_for_a_missing_order_names_the_order_not_its_stream(
    db: str, tmp_path: Path
) -> None:
    for command in (["submit", "NOPE"], ["add-item", "NOPE", "--name", "Pen", "--price", "1"]):
        result = run(*command, cwd=tmp_path, db=db)
        assert result.returncode == 1
        assert result.stdout.strip() == "error: order 'NOPE' not found"


def test_the_order_table_totals_quantities_and_the_version_is_shown(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    ok(
        run(
            "create-order",
            "ORD-Q",
            "-c",
            "C",
            "-i",
            "Pen:1.00:3",
            "-i",
            "Book:2.00:2",
            cwd=tmp_path,
            db=db,
        )
    )

    table = ok(run("order", "ORD-Q", cwd=tmp_path, db=db))
    version = ok(run("--version", cwd=tmp_path))

    assert re.search(r"total\s*│\s*│\s*5\s*│\s*7\.00", table), table
    assert re.fullmatch(r"orders \(cqrskit \d+\.\d+\.\d+\S*\)\n", version)


def test_a_page_of_the_event_log_says_how_to_get_the_next(db: str, tmp_path: Path) -> None:
    for n in range(3):
        ok(run("create-order", f"ORD-{n}", "-c", "C", "-i", "Pen:1.00:1", cwd=tmp_path, db=db))
        ok(run("add-item", f"ORD-{n}", "--name", "Ink", "--price", "2", cwd=tmp_path, db=db))

    first = ok(run("events", "--limit", "4", cwd=tmp_path, db=db))
    after = re.search(r"more: --after (\d+)", first)
    assert after, first
    rest = json.loads(ok(run("events", "--after", after[1], "--json", cwd=tmp_path, db=db)))
    stream = ok(run("events", "ORD-0", "--limit", "1", cwd=tmp_path, db=db))
    whole = json.loads(ok(run("events", "--json", cwd=tmp_path, db=db)))

    assert len(rest) == 2
    assert [e["position"] for e in whole][4:] == [e["position"] for e in rest]
    assert "more: --from-version 2" in stream
    last = run("events", "--after", after[1], cwd=tmp_path, db=db)
    assert "more:" not in ok(last)


def test_db_reset_asks_first_then_deletes_events_and_read_model_together(
    db: str, tmp_path: Path
) -> None:
    ok(run("create-order", "ORD-1", "-c", "C", "-i", "Pen:1.00:1", cwd=tmp_path, db=db))
    ok(run("order", "ORD-1", cwd=tmp_path, db=db))

    declined = answering("n", "db", "reset", cwd=tmp_path, db=db)
    assert declined.returncode == 1
    assert "nothing deleted" in declined.stdout
    ok(run("order", "ORD-1", cwd=tmp_path, db=db))

    confirmed = answering("y", "db", "reset", cwd=tmp_path, db=db)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    gone = run("events", cwd=tmp_path, db=db)
    assert gone.returncode == 3
    assert "no event store" in gone.stdout

    ok(run("create-order", "ORD-2", "-c", "C", cwd=tmp_path, db=db))
    assert ok(run("order", "ORD-2", cwd=tmp_path, db=db))
    assert run("order", "ORD-1", cwd=tmp_path, db=db).returncode == 1  # the old read model went too
    assert ok(run("db", "reset", "--yes", cwd=tmp_path, db=db))
    if db.startswith("sqlite:///"):
        assert list(tmp_path.glob("orders*")) == []


def answering(answer: str, *args: str, cwd: Path, db: str) -> subprocess.CompletedProcess[str]:
    """``orders *args`` with ``answer`` typed at its prompt."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "CQRSKIT_DB": db}
    return subprocess.run(
        [ORDERS, *args], input=f"{answer}\n", cwd=cwd, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_a_read_model_from_another_store_is_refused_until_rebuilt(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    for n in range(3):
        ok(run("create-order", f"OLD-{n}", "-c", "C", "-i", "Pen:1.00:1", cwd=tmp_path, db=db))
    ok(run("orders", "--status", "draft", cwd=tmp_path, db=db))  # the read model is built
    for stale in tmp_path.glob("orders.db*"):  # the event store deleted, the read model kept
        stale.unlink()
    ok(run("create-order", f"NEW-{uuid.uuid4().hex[:6]}", "-c", "C", cwd=tmp_path, db=db))

    refused = run("orders", "--status", "draft", cwd=tmp_path, db=db)
    status = run("projections", "status", cwd=tmp_path, db=db)

    for result in (refused, status):
        assert result.returncode == 3, result.stdout + result.stderr
        assert "was built from another event store" in result.stdout
        assert "run `orders projections rebuild`" in result.stdout
    ok(run("projections", "rebuild", cwd=tmp_path, db=db))
    listed = ok(run("orders", "--status", "draft", cwd=tmp_path, db=db))
    assert "NEW-" in listed
    assert "OLD-" not in listed
    assert "up to date" in ok(run("projections", "status", cwd=tmp_path, db=db))
