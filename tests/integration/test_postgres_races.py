"""PostgreSQL: an append that loses the race for a stream version to another process.

The version check and the insert are one statement, but two processes can both pass the check
before either commits: the stream's unique (stream, version) key then decides. These tests hold
a rival transaction open with the next version inserted, let the store's append block on it,
and commit the rival, so the race happens every time rather than once in a thousand runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import psycopg
import pytest

from cqrskit import ConcurrencyError
from cqrskit.messages import NewEvent
from cqrskit.postgres import PostgresEventStore, migrate
from tests.support.postgres import fresh_database_url
from tests.support.waiting import until

pytestmark = pytest.mark.postgres


def _event() -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        event_type="Seen",
        schema_version=1,
        data=msgspec.json.encode({}),
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )


@pytest.fixture
async def pg_url(request: pytest.FixtureRequest) -> str:
    url = fresh_database_url(request)
    await migrate(url)
    return url


@contextlib.asynccontextmanager
async def _rival_holding(
    url: str, stream_id: str, version: int
) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """Another process's transaction that inserted ``version`` of ``stream_id`` and has not
    committed yet."""
    async with await psycopg.AsyncConnection.connect(url) as rival:
        await rival.execute(
            "INSERT INTO cqrskit_events (seq, stream_id, stream_version, event_id, event_type,"
            " schema_version, data, metadata, recorded_at)"
            " VALUES (0, %s, %s, gen_random_uuid(), 'Seen', 1, '{}', '{}', now())",
            (stream_id, version),
        )
        yield rival


async def _blocked_on_a_lock(url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as probe:
        cursor = await probe.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
        return row is not None and row[0] > 0


async def _append_beside_a_rival(
    url: str, expected: int | None
) -> tuple[asyncio.Task[object], PostgresEventStore]:
    store = await PostgresEventStore.open(url)
    await store.append("race", [_event()], 0)
    async with _rival_holding(url, "race", 2) as rival:
        append = asyncio.create_task(store.append("race", [_event()], expected))
        await until(lambda: _blocked_on_a_lock(url), what="the append waiting for the rival")
        await rival.commit()
    with contextlib.suppress(ConcurrencyError):
        await append
    return append, store  # type: ignore[return-value]


async def test_an_append_that_loses_its_expected_version_to_another_process_is_a_conflict(
    pg_url: str,
) -> None:
    append, store = await _append_beside_a_rival(pg_url, expected=1)
    try:
        error = append.exception()
        assert isinstance(error, ConcurrencyError)
        assert (error.stream_id, error.expected_version, error.actual_version) == ("race", 1, 2)
        assert [e.stream_version for e in await store.read_stream("race")] == [1, 2]
    finally:
        await store.close()


async def test_an_append_at_any_version_that_loses_the_race_takes_the_next_one(
    pg_url: str,
) -> None:
    append, store = await _append_beside_a_rival(pg_url, expected=None)
    try:
        result = append.result()
        assert result.version == 3  # type: ignore[attr-defined]
        assert [e.stream_version for e in await store.read_stream("race")] == [1, 2, 3]
    finally:
        await store.close()
