"""Databases written by the previous release open in this one, and answer as they did.

Each directory of ``tests/fixtures/releases/`` holds the databases of one release (a SQLite pair
and a ``pg_dump``) and, in ``expected.json``, what that release answered for them; see the
README there. Every test takes a fresh copy (SQLite files copied into ``tmp_path``, the dump
restored into a new schema), so the committed fixtures are never modified. The next release adds
a directory; nothing here changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest

from orders.app import Settings, build_app
from orders.domain import order_decider
from tests.e2e.server import ServerThread
from tests.support.postgres import (
    advance_transaction_ids_past,
    fresh_schema,
    next_transaction_id,
    restore_dump,
    server_dsn,
    with_search_path,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "releases"
RELEASES = sorted(path.name for path in FIXTURES.iterdir() if (path / "expected.json").is_file())
BACKENDS = ("sqlite", "postgres")
ORDERS = str(Path(sys.executable).with_name("orders"))
EXIT_REJECTED = 1

Json = Any


@dataclass(frozen=True)
class OldDatabase:
    """A fresh copy of a release's database, and what that release answered for it."""

    release: str
    backend: str
    url: str
    expected: dict[str, Json]

    @property
    def recorded(self) -> dict[str, Json]:
        """The answers that depend on the backend (event ids, positions, tokens)."""
        backend: dict[str, Json] = self.expected["backends"][self.backend]
        return backend

    @property
    def old_head(self) -> int:
        position: int = self.recorded["events"][-1]["position"]
        return position

    def old_orders(self, status: str, *, with_items: bool) -> list[str]:
        return [
            order_id
            for order_id, order in sorted(self.expected["orders"].items())
            if order["status"] == status and (order["item_count"] > 0) == with_items
        ]


def copy_sqlite(directory: Path, files: list[str], into: Path) -> str:
    for name in files:
        shutil.copyfile(directory / "sqlite" / name, into / name)
    return f"sqlite:///{into / 'orders.db'}"


def restore_postgres(
    directory: Path, recorded: dict[str, Json], request: pytest.FixtureRequest
) -> str:
    dsn, schema = fresh_schema(request)
    dump = (directory / recorded["dump"]).read_text(encoding="utf-8")
    restore_dump(dsn, dump, dumped_schema=recorded["schema"], into_schema=schema)
    # The restored events keep the transaction ids of the cluster that wrote them: this cluster
    # must be past them, or read_all hides them and new events sort before them.
    advance_transaction_ids_past(dsn, recorded["max_transaction_id"])
    return with_search_path(dsn, schema)


@pytest.fixture(
    params=[
        pytest.param(
            (release, backend),
            id=f"{release}-{backend}",
            marks=[pytest.mark.postgres] if backend == "postgres" else [],
        )
        for release in RELEASES
        for backend in BACKENDS
    ]
)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> OldDatabase:
    release, backend = request.param
    directory = FIXTURES / release
    expected = json.loads((directory / "expected.json").read_text(encoding="utf-8"))
    recorded = expected["backends"][backend]
    if backend == "sqlite":
        url = copy_sqlite(directory, recorded["files"], tmp_path)
    else:
        url = restore_postgres(directory, recorded, request)
    return OldDatabase(release, backend, url, expected)


# -- comparing answers --------------------------------------------------------------------------


def differences(expected: Json, actual: Json, where: str = "") -> list[str]:
    """Where ``actual`` does not answer as ``expected``.

    Every field the old release gave must come back with the same value (a field added since is
    fine); timestamps (``*_at``) are compared as instants, since PostgreSQL renders them in the
    session's time zone.
    """
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{where}.{key}: missing")
            elif key.endswith("_at") and isinstance(value, str) and isinstance(actual[key], str):
                if datetime.fromisoformat(value) != datetime.fromisoformat(actual[key]):
                    found.append(f"{where}.{key}: {actual[key]!r}, expected {value!r}")
            else:
                found += differences(value, actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} entries, expected {len(expected)}"]
        return [
            d
            for i, pair in enumerate(zip(expected, actual, strict=True))
            for d in differences(*pair, f"{where}[{i}]")
        ]
    return [] if expected == actual else [f"{where}: {actual!r}, expected {expected!r}"]


def assert_answers_as(expected: Json, actual: Json) -> None:
    found = differences(expected, actual)
    assert not found, "\n".join(difference[:300] for difference in found[:20])


async def query_answers(url: str, expected: dict[str, Json]) -> dict[str, Json]:
    """What the current code answers to the queries the old release answered."""
    app = await build_app(Settings(db_url=url))
    try:
        queries = app.queries
        orders = {order_id: await queries.get_order(order_id) for order_id in expected["orders"]}
        by_customer = {
            customer: await queries.orders_by_customer(customer)
            for customer in expected["orders_by_customer"]
        }
        by_status = {
            status: await queries.orders_by_status(status)
            for status in expected["orders_by_status"]
        }
        answers = {
            "orders": orders,
            "orders_by_customer": by_customer,
            "orders_by_status": by_status,
            "daily_stats": await queries.daily_stats(),
            "dashboard_stats": await queries.dashboard_stats(),
        }
        return {key: as_json(value) for key, value in answers.items()}
    finally:
        await app.close()


def as_json(value: object) -> Json:
    """``value`` as a client would read it: encoded as JSON, then decoded."""
    return msgspec.json.decode(msgspec.json.encode(value))


def shared_answers(expected: dict[str, Json]) -> dict[str, Json]:
    keys = ("orders", "orders_by_customer", "orders_by_status", "daily_stats", "dashboard_stats")
    return {key: expected[key] for key in keys}


def orders_cli(*args: str, db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("CQRSKIT_DB", None)
    return subprocess.run(
        [ORDERS, *args, "--db", db],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_json(*args: str, db: str, cwd: Path) -> Json:
    done = orders_cli(*args, "--json", db=db, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


# -- the tests ----------------------------------------------------------------------------------


def test_every_previous_release_has_a_fixture() -> None:
    assert RELEASES, f"no release fixture under {FIXTURES}"
    for release in RELEASES:
        expected = json.loads((FIXTURES / release / "expected.json").read_text("utf-8"))
        assert expected["release"].startswith(release)
        assert set(expected["backends"]) == set(BACKENDS)


@pytest.mark.postgres
def test_given_ids_ahead_of_the_server_when_advanced_then_new_ids_are_past_them() -> None:
    dsn = server_dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        ahead = next_transaction_id(conn) + 100
    burnt = advance_transaction_ids_past(dsn, ahead)
    assert burnt <= 101
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert next_transaction_id(conn) > ahead
        assert advance_transaction_ids_past(dsn, ahead) == 0


async def test_given_an_old_database_when_the_current_code_opens_it_then_queries_answer_as_before(
    old_database: OldDatabase,
) -> None:
    expected = old_database.expected
    assert_answers_as(shared_answers(expected), await query_answers(old_database.url, expected))


def test_given_an_old_database_when_migrated_with_the_cli_then_its_events_read_back_unchanged(
    old_database: OldDatabase, tmp_path: Path
) -> None:
    db = old_database.url
    for _ in range(2):  # migrating is idempotent
        migrated = orders_cli("db", "migrate", db=db, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "schema is up to date" in migrated.stdout
    events = cli_json("events", "--limit", "10000", db=db, cwd=tmp_path)
    assert_answers_as(old_database.recorded["events"], events)
    status = cli_json("projections", "status", db=db, cwd=tmp_path)
    assert_answers_as(old_database.recorded["projections"], status)


async def test_given_an_old_database_when_the_read_model_is_rebuilt_then_it_answers_as_before(
    old_database: OldDatabase, tmp_path: Path
) -> None:
    rebuilt = orders_cli("projections", "rebuild", db=old_database.url, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    expected = old_database.expected
    assert_answers_as(shared_answers(expected), await query_answers(old_database.url, expected))


def test_given_old_orders_when_new_commands_arrive_then_the_rules_and_the_read_side_hold(
    old_database: OldDatabase, tmp_path: Path
) -> None:
    db, expected = old_database.url, old_database.expected
    draft = old_database.old_orders("draft", with_items=True)[0]
    submitted = old_database.old_orders("submitted", with_items=True)[0]
    empty = old_database.old_orders("draft", with_items=False)[0]
    old_version = len(old_database.recorded["order_events"][draft]["events"])

    new_item = ("--name", "Upgrade check", "--price", "12.50", "--quantity", "2")
    added = cli_json("add-item", draft, *new_item, db=db, cwd=tmp_path)
    assert added["version"] == old_version + 1
    assert cli_json("submit", draft, db=db, cwd=tmp_path)["version"] == old_version + 2
    for refused in (
        ("add-item", submitted, "--name", "Late extra", "--price", "1.00"),
        ("submit", submitted),
        ("submit", empty),
        ("create-order", submitted, "--customer", "CUST-new"),
    ):
        outcome = orders_cli(*refused, db=db, cwd=tmp_path)
        assert outcome.returncode == EXIT_REJECTED, (refused, outcome.stdout, outcome.stderr)

    new_events = cli_json("events", "--after", str(old_database.old_head), db=db, cwd=tmp_path)
    assert [(e["stream_id"], e["version"], e["type"]) for e in new_events] == [
        (f"order-{draft}", old_version + 1, "ItemsAdded"),
        (f"order-{draft}", old_version + 2, "OrderSubmitted"),
    ]
    old_order = expected["orders"][draft]
    new_total = Decimal(old_order["total"]) + Decimal("25.00")
    order = cli_json("order", draft, db=db, cwd=tmp_path)
    assert_answers_as(
        {
            **old_order,
            "status": "submitted",
            "items": [
                *old_order["items"],
                {"name": "Upgrade check", "price": "12.50", "quantity": 2},
            ],
            "total": str(new_total),
            "item_count": old_order["item_count"] + 1,
            "submitted_at": new_events[-1]["recorded_at"],
        },
        order,
    )
    stats = cli_json("stats", db=db, cwd=tmp_path)
    assert_answers_as(stats_after_submitting(expected, new_total, new_events[-1]), stats)


def stats_after_submitting(
    expected: dict[str, Json], total: Decimal, submitted: dict[str, Json]
) -> dict[str, Json]:
    """The old release's stats, after one more order of ``total`` (a draft until now, counted
    in the revenue without the item just added) was submitted by event ``submitted``."""
    old = expected["dashboard_stats"]
    revenue = Decimal(old["total_revenue"]) + Decimal("25.00")
    average = (revenue / old["total_orders"]).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    day = datetime.fromisoformat(submitted["recorded_at"]).date().isoformat()
    daily = {entry["date"]: dict(entry) for entry in expected["daily_stats"]}
    entry = daily.setdefault(day, {"date": day, "count": 0, "revenue": "0.00"})
    entry["count"] += 1
    entry["revenue"] = str(Decimal(entry["revenue"]) + total)
    return {
        "dashboard": {
            "total_orders": old["total_orders"],
            "total_revenue": str(revenue),
            "draft_orders": old["draft_orders"] - 1,
            "submitted_orders": old["submitted_orders"] + 1,
            "average_order_value": str(average),
        },
        "daily": [daily[date] for date in sorted(daily)],
    }


def test_given_old_idempotent_requests_when_retried_over_http_then_the_first_responses_replay(
    old_database: OldDatabase,
) -> None:
    server = ServerThread(Settings(db_url=old_database.url)).start()
    try:
        with server.client() as http:
            recorded = old_database.recorded["idempotent_requests"]
            for sent, answered in ((r["request"], r["response"]) for r in recorded):
                replay = post(http, sent["path"], sent["body"], sent["idempotency_key"])
                assert replay.headers.get("Idempotent-Replayed") == "true", replay.text
                assert (replay.status_code, replay.json()) == (answered["status"], answered["body"])
            first = recorded[0]["request"]
            reused = post(
                http,
                first["path"],
                {**first["body"], "customer_id": "CUST-other"},
                first["idempotency_key"],
            )
            assert reused.status_code == 422, reused.text
            assert reused.json()["type"].endswith("/idempotency-key-reused")
            for order_id, stream in old_database.recorded["order_events"].items():
                answer = http.get(f"/orders/{order_id}/events")
                assert answer.status_code == 200, answer.text
                assert_answers_as(stream, answer.json())
    finally:
        server.stop()


def post(http: httpx.Client, path: str, body: Json, key: str) -> httpx.Response:
    return http.post(path, json=body, headers={"Idempotency-Key": key})


def test_given_old_item_added_events_then_the_log_shows_each_as_stored_and_as_read_today(
    old_database: OldDatabase, tmp_path: Path
) -> None:
    """``ItemAdded {order_id, item}`` (one item per event, until 648275e) stays in the store as
    written, and reads as ``ItemsAdded`` with that one item (see orders.domain.UPCASTERS)."""

    def read_today(event: Json) -> Json:
        if event["type"] != "ItemAdded":
            return {"type": event["type"], "schema_version": 1, "data": event["data"]}
        data = event["data"]
        items = {"order_id": data["order_id"], "items": [data["item"]]}
        return {"type": "ItemsAdded", "schema_version": 1, "data": items}

    logged = cli_json("events", "--limit", "10000", db=old_database.url, cwd=tmp_path)
    assert "ItemAdded" in {event["type"] for event in logged}
    assert [event["current"] for event in logged] == [read_today(event) for event in logged]

    server = ServerThread(Settings(db_url=old_database.url)).start()
    try:
        with server.client() as http:
            for order_id in old_database.recorded["order_events"]:
                stream = http.get(f"/orders/{order_id}/events").json()["events"]
                assert [event["current"] for event in stream] == [read_today(e) for e in stream]
    finally:
        server.stop()


def test_given_an_old_database_then_orders_snapshot_and_load_from_snapshots_there(
    old_database: OldDatabase, tmp_path: Path
) -> None:
    """The snapshot table comes with a migration; on an old database a command snapshots an
    old order's state (read from old events, upcast) and the next load starts from it."""
    draft = old_database.old_orders("draft", with_items=True)[0]
    old_version = len(old_database.recorded["order_events"][draft]["events"])
    env = {**os.environ, "CQRSKIT_SNAPSHOT_EVERY": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    command = [ORDERS, "add-item", draft, "--item", "Snapshot check:3.00:1", "--db"]
    done = subprocess.run(
        [*command, old_database.url], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    async def snapshot_and_state() -> tuple[Any, tuple[int, Any]]:
        app = await build_app(Settings(db_url=old_database.url, snapshot_every=1))
        try:
            assert app.backend.snapshots is not None
            stored = await app.backend.snapshots.load(f"order-{draft}", "OrderState", 1)
            return stored, await app.commands.load(order_decider, f"order-{draft}")
        finally:
            await app.close()

    stored, (version, state) = asyncio.run(snapshot_and_state())
    assert stored is not None
    assert stored.stream_version == old_version + 1
    old_order = old_database.expected["orders"][draft]
    assert (version, state.item_count) == (old_version + 1, old_order["item_count"] + 1)
    assert state.total == Decimal(old_order["total"]) + Decimal("3.00")
