"""PostgreSQL databases moved between clusters, and sessions in other time zones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
import pytest

from cqrskit import ConfigurationError, StoreUnavailable
from cqrskit.backends import open_backend
from cqrskit.messages import NewEvent
from cqrskit.postgres import PostgresEventStore, advance_transaction_ids, migrate
from tests.e2e.test_cli import run
from tests.support.postgres import fresh_url, next_transaction_id

pytestmark = pytest.mark.postgres


def with_option(url: str, option: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} {option}".strip()
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def restored_ahead(url: str, order_id: str) -> int:
    """Store an order's first event as a dump of a cluster ahead of this one would: written by a
    transaction id this cluster has not handed out yet. Returns that id."""
    data = msgspec.json.encode({"order_id": order_id, "customer_id": "C", "items": []})
    with psycopg.connect(url, autocommit=True) as conn:
        ahead = next_transaction_id(conn) + 5_000
        conn.execute(
            "INSERT INTO cqrskit_events VALUES (%s::text::xid8, 0, %s, 1, %s, 'OrderCreated', 1,"
            " %s, '{}'::bytea, now())",
            (str(ahead), f"order-{order_id}", uuid.uuid4(), data),
        )
    return ahead


async def test_a_database_restored_behind_its_transaction_ids_is_refused_then_fixed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = fresh_url(request)
    await migrate(url)
    restored_ahead(url, "R-1")

    with pytest.raises(ConfigurationError, match="restored from a dump of another cluster"):
        await open_backend(url)
    refused = run("events", "--db", url, cwd=tmp_path)
    assert refused.returncode == 3
    assert "orders db advance-transaction-ids" in refused.stdout
    assert "Traceback" not in refused.stdout + refused.stderr

    fixed = run("db", "advance-transaction-ids", "--db", url, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert await advance_transaction_ids(url) == 0  # nothing left to do
    added = run("add-item", "R-1", "--name", "Pen", "--price", "1.00", "--db", url, cwd=tmp_path)
    assert added.returncode == 0, added.stdout + added.stderr
    shown = run("events", "R-1", "--json", "--db", url, cwd=tmp_path)
    assert [e["type"] for e in msgspec.json.decode(shown.stdout)] == ["OrderCreated", "ItemsAdded"]


async def test_an_append_after_such_a_restore_is_a_clear_error_not_an_assertion(
    request: pytest.FixtureRequest,
) -> None:
    url = fresh_url(request)
    await migrate(url)
    restored_ahead(url, "R-2")
    store = await PostgresEventStore.open(url)  # opened without the check migrate makes
    event = NewEvent(
        event_id=uuid.uuid4(),
        event_type="ItemsAdded",
        schema_version=1,
        data=b'{"order_id": "R-2", "items": []}',
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )
    try:
        with pytest.raises(StoreUnavailable, match="transaction ids this PostgreSQL cluster"):
            await store.append("order-R-2", [event], 1)
    finally:
        await store.close()


async def test_timestamps_come_back_in_utc_whatever_the_session_time_zone(
    request: pytest.FixtureRequest,
) -> None:
    url = with_option(fresh_url(request), "-c TimeZone=Asia/Tokyo")
    backend = await open_backend(url)
    try:
        at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        event = NewEvent(
            event_id=uuid.uuid4(),
            event_type="Happened",
            schema_version=1,
            data=b"{}",
            metadata=b"{}",
            recorded_at=at,
        )
        await backend.events.append("s-1", [event], 0)
        (streamed,) = await backend.events.read_stream("s-1")
        (logged,) = await backend.events.read_all(0, 10)
        for recorded in (streamed, logged):
            assert recorded.recorded_at == at
            assert recorded.recorded_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
            assert recorded.recorded_at.isoformat() == "2024-05-01T12:00:00+00:00"
    finally:
        await backend.close()
