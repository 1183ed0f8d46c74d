"""PostgreSQL: an acknowledged append is visible to readers, and subscribers never depend on a
NOTIFY arriving.

Two promises the rest of the suite could not tell apart from their absence: an append that
returned before older transactions ended (so ``read_all`` right after it missed it) passed every
other test, and so did a subscription that waited for notifications only.
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

from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.postgres import PostgresEventStore, migrate
from tests.support.postgres import fresh_database_url
from tests.support.waiting import DEADLINE, until

pytestmark = pytest.mark.postgres


def _events(count: int) -> list[NewEvent]:
    return [
        NewEvent(
            event_id=uuid.uuid4(),
            event_type="Seen",
            schema_version=1,
            data=msgspec.json.encode({"n": n}),
            metadata=b"{}",
            recorded_at=datetime.now(UTC),
        )
        for n in range(count)
    ]


@pytest.fixture
async def pg_url(request: pytest.FixtureRequest) -> str:
    # A database of its own: no other test's NOTIFY may wake these subscribers.
    url = fresh_database_url(request)
    await migrate(url)
    return url


@contextlib.asynccontextmanager
async def _older_transaction(url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """A transaction that holds a transaction id (older than any that starts later) open."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("SELECT pg_current_xact_id()")  # takes an id; commit on exit
        yield conn


async def _committed(store: PostgresEventStore, stream_id: str) -> None:
    """Until ``stream_id`` has events in the table (``read_stream`` ignores the horizon)."""
    await until(lambda: _has_events(store, stream_id), what=f"a commit to {stream_id}")


async def _has_events(store: PostgresEventStore, stream_id: str) -> bool:
    return bool(await store.read_stream(stream_id))


def _waiting_for_visibility(store: PostgresEventStore) -> int:
    """How many committed appends wait for older transactions to end before they are
    acknowledged (the adapter's own bookkeeping: no public API says this)."""
    return len(store._appends._horizon._waiters)


async def test_an_append_returns_only_once_readers_can_see_it(pg_url: str) -> None:
    # Given an older transaction that stays open, hiding every younger commit from readers
    store = await PostgresEventStore.open(pg_url, visibility_timeout=DEADLINE)
    events = _events(2)

    async def append_then_read() -> list[RecordedEvent]:
        await store.append("s", events, 0)
        return await store.read_all(0)  # at once, as a caller reading its own write would

    try:
        async with _older_transaction(pg_url) as older:
            # When an append commits behind it
            appending = asyncio.create_task(append_then_read())
            await _committed(store, "s")
            await until(lambda: appending.done() or _waiting_for_visibility(store) > 0)
            # Then it is not acknowledged while readers cannot see it ...
            assert not appending.done(), "acknowledged before readers can see the events"
            assert await store.read_all(0) == []
            await older.commit()
            # ... and is acknowledged once they can, and then readers find it
            async with asyncio.timeout(DEADLINE):
                visible = await appending
        assert [event.event_id for event in visible] == [event.event_id for event in events]
        assert visible[-1].position == await store.head_position()
    finally:
        await store.close()


async def test_a_read_right_after_each_acknowledged_append_finds_it(pg_url: str) -> None:
    # Given other transactions starting and ending all the time (a busy cluster)
    store = await PostgresEventStore.open(pg_url, visibility_timeout=DEADLINE)
    stop = asyncio.Event()

    async def churn() -> None:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute("SELECT pg_current_xact_id()")
                    await asyncio.sleep(0.005)

    churners = [asyncio.create_task(churn()) for _ in range(3)]
    try:
        # When appends are acknowledged, one at a time and concurrently
        for round_ in range(20):
            results = await asyncio.gather(
                *(store.append(f"s-{round_}-{n}", _events(1), 0) for n in range(4))
            )
            # Then every one is already visible to a reader
            head = await store.head_position()
            assert head >= max(result.position for result in results)
            for result in results:
                [found] = await store.read_all(result.position - 1, 1)
                assert found.position == result.position
    finally:
        stop.set()
        await asyncio.gather(*churners)
        await store.close()


class _CountingReads:
    """Wraps a store's ``read_all`` to count the reads that found nothing new."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.empty_reads = 0
        self._read_all = store.read_all
        store.read_all = self  # type: ignore[method-assign]

    async def __call__(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        found = await self._read_all(after, limit)
        if not found:
            self.empty_reads += 1
        return found

    async def until_idle(self, reads: int) -> None:
        await until(lambda: self.empty_reads >= reads, what=f"{reads} empty reads")


async def test_a_subscriber_finds_events_that_no_notification_announced(pg_url: str) -> None:
    # Given an idle subscriber: it has read, found nothing, and waits
    store = await PostgresEventStore.open(pg_url)
    reads = _CountingReads(store)
    received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

    async def consume() -> None:
        async for batch in store.subscribe_all(0, 100):
            for event in batch:
                received.put_nowait(event)

    consumer = asyncio.create_task(consume())
    try:
        await reads.until_idle(2)
        # When an event is committed without a NOTIFY (as when the listener is reconnecting,
        # or when the end of a long transaction makes older events visible)
        event_id = uuid.uuid4()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "INSERT INTO cqrskit_events (seq, stream_id, stream_version, event_id,"
                " event_type, schema_version, data, metadata, recorded_at)"
                " VALUES (0, 'quiet', 1, %s, 'Seen', 1, '{}', '{}', now())",
                (event_id,),
            )
        # Then the subscriber finds it anyway (it polls between notifications)
        async with asyncio.timeout(DEADLINE):
            assert (await received.get()).event_id == event_id
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await store.close()


async def test_a_subscriber_sees_events_an_ended_older_transaction_releases(pg_url: str) -> None:
    # Given a subscriber, and an older transaction open while an append commits (its NOTIFY
    # reaches the subscriber while the event is still hidden)
    store = await PostgresEventStore.open(pg_url, visibility_timeout=0)
    reads = _CountingReads(store)
    received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

    async def consume() -> None:
        async for batch in store.subscribe_all(0, 100):
            for event in batch:
                received.put_nowait(event)

    consumer = asyncio.create_task(consume())
    try:
        await reads.until_idle(1)
        async with _older_transaction(pg_url):
            result = await store.append("hidden", _events(1), 0)
            before = reads.empty_reads
            await reads.until_idle(before + 1)  # woken, read, found nothing: the event is hidden
            assert received.empty()
        # When the older transaction ends: no event of its own, so no notification
        # Then the subscriber still receives the append
        async with asyncio.timeout(DEADLINE):
            assert (await received.get()).position == result.position
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await store.close()


async def test_closing_the_store_releases_an_append_waiting_for_visibility(pg_url: str) -> None:
    store = await PostgresEventStore.open(pg_url, visibility_timeout=DEADLINE)
    async with _older_transaction(pg_url):
        appending = asyncio.create_task(store.append("s", _events(1), 0))
        await until(lambda: _waiting_for_visibility(store) > 0, what="the append waiting")
        await store.close()  # committed: the append is acknowledged, not failed
        result = await appending
    assert result.version == 1


async def test_an_idle_subscriber_does_not_spin(pg_url: str) -> None:
    store = await PostgresEventStore.open(pg_url)
    store._poll_interval = 3600  # only notifications wake it now
    reads = _CountingReads(store)
    consumer = asyncio.create_task(anext(store.subscribe_all(0, 100)))
    try:
        await reads.until_idle(2)  # its first read, and the one after LISTEN took effect
        # Nothing is appended and no notification comes: it must not read again. (A second
        # of silence can only hide a spinning subscriber on a slow machine, never fail a
        # correct one; a spinning one reads again within milliseconds.)
        with pytest.raises(AssertionError):
            await until(lambda: reads.empty_reads > 2, timeout=1.0, what="another read")
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await store.close()
