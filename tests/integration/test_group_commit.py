"""Group commit really groups: concurrent appends share one database transaction.

Observed through the databases themselves, not through the adapter's bookkeeping: on SQLite
by counting the commit frames of the write-ahead log, on PostgreSQL by the transaction id that
every event row records.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cqrskit.messages import NewEvent
from cqrskit.postgres import PostgresEventStore, migrate
from cqrskit.postgres._common import POSITION_BITS
from cqrskit.sqlite import SqliteEventStore
from tests.support.postgres import fresh_url
from tests.support.sqlite import queued, writer_is_committing
from tests.support.waiting import until

APPENDS = 40


def _event() -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        event_type="Grouped",
        schema_version=1,
        data=b"{}",
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )


def wal_commits(database: Path) -> int:
    """How many transactions the write-ahead log of ``database`` holds (its commit frames).

    A WAL file is a 32-byte header and frames of a 24-byte header plus one page; a frame that
    ends a transaction records the database size (non-zero), and frames of the current log carry
    the header's salts (older frames left behind by a log restart do not).
    """
    wal = database.with_name(database.name + "-wal").read_bytes()
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(wal):
        header = wal[offset : offset + 24]
        if header[8:16] != salts:
            break
        commits += struct.unpack(">I", header[4:8])[0] != 0
        offset += 24 + page_size
    return commits


async def test_sqlite_commits_appends_queued_together_in_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.append("first", [_event()], 0)
        before = wal_commits(path)
        # Given the writer busy with one append (another connection holds the write lock)
        blocker.execute("BEGIN IMMEDIATE")
        plug = asyncio.create_task(store.append("plug", [_event()], 0))
        await until(lambda: writer_is_committing(store), what="the writer taking the plug")
        # When many appends arrive meanwhile
        others = [store.append(f"s-{n}", [_event(), _event()], 0) for n in range(APPENDS)]
        appending = asyncio.gather(plug, *others)
        await until(lambda: queued(store) == APPENDS, what="appends queued")
        blocker.execute("COMMIT")
        results = await appending
        # Then they are committed in one transaction after the plug's: two commits in all
        assert wal_commits(path) - before == 2
        positions = sorted(result.position for result in results[1:])
        assert positions == list(range(4, 4 + 2 * APPENDS, 2)), "not one contiguous commit"
    finally:
        blocker.close()
        await store.close()


@pytest.mark.postgres
async def test_postgres_commits_concurrent_appends_in_one_transaction(
    request: pytest.FixtureRequest,
) -> None:
    url = fresh_url(request)
    await migrate(url)
    store = await PostgresEventStore.open(url)
    try:
        streams = [f"s-{n}" for n in range(APPENDS)]
        results = await asyncio.gather(*(store.append(s, [_event(), _event()], 0) for s in streams))
        assert len({result.position >> POSITION_BITS for result in results}) == 1
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cursor = await conn.execute(
                "SELECT count(DISTINCT transaction_id), count(*) FROM cqrskit_events"
            )
            assert await cursor.fetchone() == (1, 2 * APPENDS)
        # and one append alone is its own transaction, as the next group is
        later = await store.append("later", [_event()], 0)
        assert later.position >> POSITION_BITS > results[0].position >> POSITION_BITS
    finally:
        await store.close()
