"""The PostgreSQL event store while its server is down (the suite's own server): an append
waits at most one pool timeout for a connection, also when it was queued behind others."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from cqrskit import StoreUnavailable
from cqrskit.backends import open_backend
from cqrskit.messages import NewEvent
from cqrskit.postgres import PostgresEventStore
from cqrskit.store import NO_STREAM
from tests.support.throwaway_postgres import ThrowawayPostgres
from tests.support.waiting import turns_until, until


def event() -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        event_type="Happened",
        schema_version=1,
        data=b"{}",
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )


async def test_appends_queued_behind_one_that_found_no_connection_are_refused_with_it(
    postgres: ThrowawayPostgres, postgres_url: str
) -> None:
    backend = await open_backend(postgres_url)
    store = backend.events
    assert isinstance(store, PostgresEventStore)
    try:
        await store.append("before", [event()], NO_STREAM)
        postgres.stop()
        # Given an append waiting for a connection that cannot come
        while True:  # the pool may first hand out its connections the stop broke
            with pytest.raises(StoreUnavailable) as refused:
                await store.append("probe", [event()], NO_STREAM)
            if "no connection within" in str(refused.value):
                break
        first = asyncio.create_task(store.append("first", [event()], NO_STREAM))
        [lane] = store._appends._lanes  # one group-commit lane: the default
        await turns_until(lambda: bool(lane.queue))  # the append reaches the lane's queue
        await until(lambda: not lane.queue, what="the first append waiting for a connection")
        # When more appends queue behind it
        queued = [
            asyncio.create_task(store.append(f"queued-{n}", [event()], NO_STREAM)) for n in range(3)
        ]
        await turns_until(lambda: len(lane.queue) == 3)  # they reach the queue
        with pytest.raises(StoreUnavailable, match="no connection within"):
            await first
        # Then they are refused with it, without a wait of their own
        await turns_until(lambda: all(task.done() for task in queued), turns=3)
        for task in queued:
            with pytest.raises(StoreUnavailable, match="no connection within"):
                task.result()

        postgres.start()
        await until(lambda: _appends(store), what="appends working again")
        for stream in ("first", "queued-0", "queued-1", "queued-2", "probe"):
            assert await store.read_stream(stream) == []  # refused: nothing written
    finally:
        await backend.close()


async def _appends(store: PostgresEventStore) -> bool:
    try:
        await store.append("after", [event()], None)
    except StoreUnavailable:
        return False
    return True
