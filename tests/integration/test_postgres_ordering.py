"""PostgreSQL's global order: gap-safe under concurrent writers, long and rolled-back transactions.

The stress test runs writer tasks in this process and in two child processes (many streams,
a few shared "hot" streams), plus raw connections that insert with the adapter's own SQL and
hold their transaction open for a while before committing or rolling back, all while a live
subscription reads. Afterwards the subscription must have seen every committed event exactly
once, in strictly increasing positions, each stream's events in version order, and no
rolled-back event.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psycopg
import pytest

from cqrskit import Backend
from cqrskit.errors import ConcurrencyError
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.postgres import PostgresEventStore, migrate, open_backend
from cqrskit.postgres._appends import APPEND_SQL, append_params
from cqrskit.postgres._common import decode_position, encode_position
from cqrskit.store import EventStore
from tests.support.postgres import fresh_url

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
HOT_STREAMS = ("hot-a", "hot-b")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return fresh_url(request)


@pytest.fixture
async def pg_backend(pg_url: str) -> AsyncIterator[Backend]:
    backend = await open_backend(pg_url)
    yield backend
    await backend.close()


def _events(count: int) -> list[NewEvent]:
    return [
        NewEvent(
            event_id=uuid.uuid4(),
            event_type="Stressed",
            schema_version=1,
            data=msgspec.json.encode({"n": n}),
            metadata=b"{}",
            recorded_at=datetime.now(UTC),
        )
        for n in range(count)
    ]


@dataclass
class Outcomes:
    """What the writers know: events acknowledged as committed, and events rolled back."""

    committed: set[uuid.UUID] = field(default_factory=set)
    rolled_back: set[uuid.UUID] = field(default_factory=set)


ENOUGH_EVENTS = 1200


async def _writer(store: EventStore, deadline: float, outcomes: Outcomes, tag: str) -> None:
    """Appends 1-3 events at a time: mostly to its own streams, sometimes to a hot stream."""
    rng = random.Random()
    own, version = f"{tag}-{uuid.uuid4().hex}", 0
    # Run for the time given and until enough is written to prove something (a slow machine
    # writes less per second), within a hard limit.
    limit = deadline + 60
    while time.monotonic() < limit and (
        time.monotonic() < deadline or len(outcomes.committed) < ENOUGH_EVENTS
    ):
        events = _events(rng.randint(1, 3))
        if rng.random() < 0.3:
            stream = rng.choice(HOT_STREAMS)
            try:
                expected = None if rng.random() < 0.5 else await store.stream_version(stream)
                await store.append(stream, events, expected)
            except ConcurrencyError:
                continue  # another writer got there first: nothing was written
        else:
            result = await store.append(own, events, version)
            version = result.version
            if version > 12:
                own, version = f"{tag}-{uuid.uuid4().hex}", 0
        outcomes.committed.update(event.event_id for event in events)


async def _slow_writer(url: str, deadline: float, outcomes: Outcomes) -> None:
    """Inserts with the adapter's SQL in a transaction held open 50-600 ms; a third roll back."""
    rng = random.Random()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        while time.monotonic() < deadline:
            stream = rng.choice((*HOT_STREAMS, f"slow-{uuid.uuid4().hex}"))
            events = _events(rng.randint(1, 4))
            ids = {event.event_id for event in events}
            commit = rng.random() >= 1 / 3
            try:
                async with conn.transaction():
                    await conn.execute(APPEND_SQL, append_params(stream, events, None, None))
                    await asyncio.sleep(rng.uniform(0.05, 0.6))
                    if not commit:
                        raise psycopg.Rollback()
            except psycopg.errors.UniqueViolation:
                commit = False  # lost a race for a hot stream's next version: rolled back
            (outcomes.committed if commit else outcomes.rolled_back).update(ids)


CHILD = """
import asyncio, sys, time
from cqrskit.postgres import open_backend
from tests.integration.test_postgres_ordering import Outcomes, _writer

async def main(url, seconds, tag):
    backend = await open_backend(url)
    outcomes, deadline = Outcomes(), time.monotonic() + seconds
    writers = (_writer(backend.events, deadline, outcomes, f"{tag}{i}") for i in range(8))
    await asyncio.gather(*writers)
    await backend.close()
    print("\\n".join(str(event_id) for event_id in outcomes.committed))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
"""


async def _child_writer(url: str, seconds: float, tag: str) -> set[uuid.UUID]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        str(seconds),
        tag,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    assert child.returncode == 0, f"writer process {tag} failed"
    return {uuid.UUID(line) for line in out.decode().split()}


async def _follow(store: EventStore, seen: list[RecordedEvent]) -> None:
    async for batch in store.subscribe_all(0, batch_size=100):
        seen.extend(batch)


async def _stress(url: str, backend: Backend, seconds: float) -> None:
    store, outcomes = backend.events, Outcomes()
    seen: list[RecordedEvent] = []
    subscription = asyncio.create_task(_follow(store, seen))
    deadline = time.monotonic() + seconds
    # The child processes' stores acknowledge an append once readers can see it (the default),
    # so the long transactions slow them down; this process's writers do not wait.
    children = [asyncio.create_task(_child_writer(url, seconds, f"p{n}-")) for n in range(2)]
    eager = await PostgresEventStore.open(url, visibility_timeout=0)
    writers = [_writer(eager, deadline, outcomes, f"t{n}-") for n in range(16)]
    slow = [_slow_writer(url, deadline, outcomes) for _ in range(3)]
    try:
        await asyncio.gather(*writers, *slow)
    finally:
        await eager.close()
    seen_while_writing = len(seen)
    for child_ids in await asyncio.gather(*children):
        outcomes.committed |= child_ids

    head = await store.head_position()
    async with asyncio.timeout(30):
        while True:
            if seen and seen[-1].position >= head:
                break
            await asyncio.sleep(0.05)
    subscription.cancel()

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT event_id FROM cqrskit_events")
        in_table = {row[0] for row in await cursor.fetchall()}
    ids = [event.event_id for event in seen]
    assert seen_while_writing > 0, "the subscription did not read while the writers ran"
    assert len(in_table) >= ENOUGH_EVENTS, "too little was written to prove anything"
    assert in_table == outcomes.committed, "an acknowledged event is missing, or one appeared"
    assert not outcomes.rolled_back & in_table
    assert len(ids) == len(set(ids)), "the subscription saw an event twice"
    assert set(ids) == in_table, "the subscription skipped committed events"
    positions = [event.position for event in seen]
    assert all(a < b for a, b in itertools.pairwise(positions))
    versions: dict[str, list[int]] = defaultdict(list)
    for event in seen:
        versions[event.stream_id].append(event.stream_version)
    for stream, order in versions.items():
        assert order == list(range(1, len(order) + 1)), f"stream {stream} out of order"


async def test_a_live_subscription_sees_every_commit_once_in_order(
    pg_url: str, pg_backend: Backend
) -> None:
    await _stress(pg_url, pg_backend, seconds=8)


@pytest.mark.slow
async def test_the_same_for_two_minutes(pg_url: str, pg_backend: Backend) -> None:
    await _stress(pg_url, pg_backend, seconds=120)


# --- the horizon, step by step ------------------------------------------------------------------


async def _quick_store(url: str) -> PostgresEventStore:
    await migrate(url)
    return await PostgresEventStore.open(url, visibility_timeout=0.1)


@pytest.mark.parametrize("older_commits", [True, False], ids=["commit", "rollback"])
async def test_an_open_older_transaction_hides_younger_commits_until_it_ends(
    pg_url: str, older_commits: bool
) -> None:
    store = await _quick_store(pg_url)
    older_events, younger_events = _events(2), _events(1)
    try:
        older = await psycopg.AsyncConnection.connect(pg_url)
        async with older, older.transaction():
            await older.execute(APPEND_SQL, append_params("older", older_events, 0, None))
            result = await store.append("younger", younger_events, 0)  # committed
            assert await store.read_stream("younger") != []
            assert await store.read_all(0) == []  # the older one may still commit
            assert await store.head_position() == 0
            if not older_commits:
                raise psycopg.Rollback()
        expected = [*older_events, *younger_events] if older_commits else younger_events
        visible = await store.read_all(0)
        assert [event.event_id for event in visible] == [e.event_id for e in expected]
        assert visible[-1].position == result.position == await store.head_position()
    finally:
        await store.close()


async def test_a_batch_statement_never_appends_after_a_younger_transactions_event(
    pg_url: str,
) -> None:
    store = await _quick_store(pg_url)
    try:
        batch = await psycopg.AsyncConnection.connect(pg_url)
        async with batch, batch.transaction():
            await batch.execute("SELECT pg_current_xact_id()")  # an id older than the next
            await store.append("s", _events(1), 0)  # a younger transaction commits v1
            cursor = await batch.execute(APPEND_SQL, append_params("s", _events(1), 1, None))
            row = await cursor.fetchone()
        assert row is not None
        version, in_order, inserted_by = row[0], row[1], row[3]
        assert (version, in_order, inserted_by) == (1, False, None)
        assert [event.stream_version for event in await store.read_stream("s")] == [1]
    finally:
        await store.close()


async def test_positions_follow_transaction_ids_numerically(pg_url: str) -> None:
    # Rows with explicit, long-finished transaction ids whose decimal forms sort differently
    # as text ('10' < '9'): the order must be numeric, in read_all and head_position.
    store = await _quick_store(pg_url)
    try:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cursor = await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            row = await cursor.fetchone()
            assert row is not None
            horizon = int(row[0])  # a fresh cluster is already past 700
            boundaries = [9, 10, 99, 100, 999, 1000, 9999, 10_000, 99_999, 100_000]
            transaction_ids = [t for t in boundaries if t < horizon]
            assert len(transaction_ids) >= 4
            for transaction_id in reversed(transaction_ids):
                await conn.execute(
                    "INSERT INTO cqrskit_events (transaction_id, seq, stream_id, stream_version,"
                    " event_id, event_type, schema_version, data, metadata, recorded_at)"
                    " VALUES (%s::text::xid8, 0, %s, 1, %s, 'E', 1, '{}', '{}', now())",
                    (str(transaction_id), f"s-{transaction_id}", uuid.uuid4()),
                )
        positions = [event.position for event in await store.read_all(0, limit=3)]
        positions += [event.position for event in await store.read_all(positions[-1])]
        assert [decode_position(p) for p in positions] == [(t, 0) for t in transaction_ids]
        assert await store.head_position() == encode_position(transaction_ids[-1], 0)
    finally:
        await store.close()
