"""Dead letters through the ``orders`` command: an event this release cannot read parks its
order in ``orders`` and halts ``order_stats``; the CLI shows, retries (after a fix) and
discards them. Real processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cqrskit import NewEvent, Upcaster
from cqrskit.backends import open_backend
from cqrskit.ids import uuid7
from cqrskit.upcasting import Payload
from orders.cli import app
from orders.domain import UPCASTERS
from tests.e2e.test_cli import run
from tests.support.postgres import fresh_url

#: what a newer release, since rolled back, wrote: items with gift wrapping (ItemsAdded v2)
NEWER_ITEMS_ADDED = {
    "order_id": "A",
    "items": [{"name": "Gift", "price": "2.00", "quantity": 1}],
    "gift_wrap": True,
}


def _unwrapped(data: Payload) -> Payload:
    return {key: value for key, value in data.items() if key != "gift_wrap"}


#: the fix: a release that reads the newer shape (its items; gift wrapping is not shown)
FIX = Upcaster("ItemsAdded", 2, to_version=1, transform=_unwrapped)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return fresh_url(request)
    return f"sqlite:///{tmp_path / 'orders.db'}"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr  # (stdout may show a dead letter's traceback)
    return result.stdout


def append_newer_event(db: str, order_id: str) -> int:
    """Store an ``ItemsAdded`` v2 on the order, as the newer release did; its position."""

    async def append() -> int:
        backend = await open_backend(db)
        try:
            stream = f"order-{order_id}"
            new = NewEvent(
                event_id=uuid7(),
                event_type="ItemsAdded",
                schema_version=2,
                data=json.dumps({**NEWER_ITEMS_ADDED, "order_id": order_id}).encode(),
                metadata=b"{}",
                recorded_at=datetime.now(UTC),
            )
            version = await backend.events.stream_version(stream)
            return (await backend.events.append(stream, [new], version)).position
        finally:
            await backend.close()

    return asyncio.run(append())


def given_a_bad_event(tmp_path: Path, db: str) -> int:
    ok(run("create-order", "A", "-c", "C-1", "-i", "Pen:1.50:2", cwd=tmp_path, db=db))
    ok(run("create-order", "B", "-c", "C-1", "-i", "Ink:3.00:1", cwd=tmp_path, db=db))
    bad = append_newer_event(db, "A")
    ok(run("add-item", "B", "--name", "Cap", "--price", "5.00", cwd=tmp_path, db=db))
    return bad


def status(tmp_path: Path, db: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(ok(run("projections", "status", "--json", cwd=tmp_path, db=db)))
    return {row["projection"]: row for row in rows}


def test_a_bad_event_parks_its_order_halts_the_stats_and_is_retried_after_a_fix(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = given_a_bad_event(tmp_path, db)

    shown = run("order", "B", "--json", cwd=tmp_path, db=db)
    before = status(tmp_path, db)
    letters = json.loads(ok(run("projections", "dead-letters", "--json", cwd=tmp_path, db=db)))
    listed = ok(run("projections", "dead-letters", "orders", cwd=tmp_path, db=db))
    table = ok(run("projections", "status", cwd=tmp_path, db=db))
    unfixed = run("projections", "retry", cwd=tmp_path, db=db)

    # the orders projection went on with order B; the stats halted at the bad event
    assert [item["name"] for item in json.loads(ok(shown))["items"]] == ["Ink", "Cap"]
    assert "warning: projection 'order_stats' halted at position" in shown.stderr
    assert before["orders"]["dead_letters"] == 1
    assert before["orders"]["halted"] is None
    halt = before["order_stats"]["halted"]
    assert (halt["position"], halt["stream_id"], halt["status"]) == (bad, "order-A", "halted")
    assert "written by a newer release" in halt["error"]
    assert "Traceback (most recent call last)" in halt["traceback"]
    assert before["order_stats"]["position"] < bad
    assert [(x["projection"], x["position"], x["status"]) for x in letters] == [
        ("orders", bad, "parked"),
        ("order_stats", bad, "halted"),
    ]
    assert letters[0]["data"] == NEWER_ITEMS_ADDED
    assert "order-A" in listed
    assert "order_stats" not in listed
    assert "halted: order_stats at position" in table
    assert "orders projections retry order_stats" in table
    assert unfixed.returncode == 1
    assert "failed again" in unfixed.stdout

    # the fixed release retries them: each applied once, in order, and the stats go on
    monkeypatch.setattr("orders.app.UPCASTERS", (*UPCASTERS, FIX))
    monkeypatch.setenv("CQRSKIT_DB", db)
    monkeypatch.setenv("COLUMNS", "200")
    cli = CliRunner()
    retried = cli.invoke(app, ["projections", "retry"])
    again = cli.invoke(app, ["projections", "retry"])
    order = json.loads(cli.invoke(app, ["order", "A", "--json"]).stdout)
    stats = json.loads(cli.invoke(app, ["stats", "--json"]).stdout)
    after = json.loads(cli.invoke(app, ["projections", "status", "--json"]).stdout)

    assert retried.exit_code == 0, retried.stdout
    assert "orders: applied 1 dead letter(s)" in retried.stdout
    assert "order_stats: applied 1 dead letter(s)" in retried.stdout
    assert "applied 0 dead letter(s)" in again.stdout
    assert [item["name"] for item in order["items"]] == ["Pen", "Gift"]
    assert stats["dashboard"]["total_revenue"] == "13.00"  # 3.00 + 2.00 + 3.00 + 5.00
    assert [(row["dead_letters"], row["halted"]) for row in after] == [(0, None), (0, None)]
    assert {row["lag_events"] for row in after} == {0}


def test_discarding_an_orders_dead_letters_lets_the_projections_go_on(
    tmp_path: Path, db: str
) -> None:
    given_a_bad_event(tmp_path, db)
    ok(run("orders", cwd=tmp_path, db=db))  # a query: the CLI catches the projections up

    declined = CliRunner().invoke(
        app, ["projections", "discard", "--order", "A", "--db", db], input="n\n"
    )
    discarded = run("projections", "discard", "--order", "A", "--yes", cwd=tmp_path, db=db)
    stats = json.loads(ok(run("stats", "--json", cwd=tmp_path, db=db)))
    after = status(tmp_path, db)
    letters = json.loads(ok(run("projections", "dead-letters", "--json", cwd=tmp_path, db=db)))

    assert declined.exit_code == 1
    assert "nothing discarded" in declined.stdout
    assert "orders: discarded 1 dead letter(s)" in ok(discarded)
    assert "order_stats: discarded 1 dead letter(s)" in discarded.stdout
    assert stats["dashboard"]["total_revenue"] == "11.00"  # without the discarded event
    assert [(row["dead_letters"], row["halted"], row["lag_events"]) for row in after.values()] == [
        (0, None, 0),
        (0, None, 0),
    ]
    assert letters == []


def test_an_unknown_projection_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    ok(run("create-order", "A", "-c", "C-1", "-i", "Pen:1.50:2", cwd=tmp_path, db=db))

    refused = run("projections", "retry", "nope", cwd=tmp_path, db=db)
    none = ok(run("projections", "dead-letters", cwd=tmp_path, db=db))

    assert refused.returncode == 2
    assert "no projection named 'nope' (known: orders, order_stats)" in refused.stdout
    assert "none" in none
