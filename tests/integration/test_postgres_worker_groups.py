"""Worker groups on PostgreSQL: members are the connections holding the group's lock, a
partition has one holder at a time, and leaving (or losing the connection) lets go of all; the
read model they keep is reset at once, whatever batches are in flight."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import psycopg
import pytest

from cqrskit import (
    Backend,
    CheckpointMoved,
    Column,
    ColumnType,
    Table,
    ViewTransaction,
    WorkerGroups,
)
from cqrskit.postgres import open_backend
from cqrskit.workers import WorkerGroup
from tests.support.postgres import fresh_url
from tests.support.waiting import until

pytestmark = pytest.mark.postgres


async def test_members_hold_partitions_one_at_a_time_and_leaving_lets_go(
    pg_backend: Backend,
) -> None:
    groups = pg_backend.read
    assert isinstance(groups, WorkerGroups)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(groups.join_group("g"))
        async with groups.join_group("g") as second, groups.join_group("other") as elsewhere:
            assert await first.members() == sorted([first.member, second.member])
            assert await elsewhere.members() == [elsewhere.member]
            assert await first.claim(3)
            assert not await second.claim(3)
            assert await elsewhere.claim(3)  # another group's partition 3
            assert await second.claim(4)
            await first.release(3)
            assert await second.claim(3)

        # the server ends the closed session (and drops its locks) just after the close
        await until(lambda: _only(first), what="the leaver gone from the members")
        assert await first.claim(3)
        assert await first.claim(4)


async def _only(member: WorkerGroup) -> bool:
    return await member.members() == [member.member]


async def test_a_group_is_its_schema_s_own(
    pg_backend: Backend, request: pytest.FixtureRequest
) -> None:
    other = await open_backend(fresh_url(request))
    try:
        assert isinstance(pg_backend.read, WorkerGroups)
        assert isinstance(other.read, WorkerGroups)
        async with pg_backend.read.join_group("g") as here, other.read.join_group("g") as there:
            assert await here.members() == [here.member]
            assert await here.claim(1)
            assert await there.claim(1)
    finally:
        await other.close()


async def test_the_members_of_a_group_are_listed_without_joining_it(pg_backend: Backend) -> None:
    groups = pg_backend.read
    assert isinstance(groups, WorkerGroups)
    assert await groups.group_members("g") == []

    async with groups.join_group("g") as first, groups.join_group("g") as second:
        assert await groups.group_members("g") == sorted([first.member, second.member])
        assert await groups.group_members("other") == []


COUNTS = Table(
    "reset_counts",
    (Column("name", ColumnType.TEXT), Column("n", ColumnType.INTEGER)),
    key=("name",),
)


def _count(view: ViewTransaction) -> None:
    view.increment(COUNTS, {"name": "all", "n": 1})


async def test_a_reset_meets_a_batch_in_flight_before_or_after_it_never_between(
    request: pytest.FixtureRequest,
) -> None:
    url = fresh_url(request)
    backend = await open_backend(url)
    store = backend.read
    assert isinstance(store, WorkerGroups)
    try:
        await backend.read.setup([COUNTS])
        await backend.read.apply("p[0/2]", 0, 5, _count)
        await backend.read.apply("p[1/2]", 0, 6, _count)
        entered, release = threading.Event(), threading.Event()

        def held(view: ViewTransaction) -> None:  # runs in a thread, its transaction open
            entered.set()
            release.wait(60)
            view.get(COUNTS, "all")  # reads the table once the reset waits: no deadlock
            _count(view)

        batch = asyncio.create_task(backend.read.apply("p[0/2]", 5, 9, held))
        await until(entered.is_set, what="the batch in flight")
        reset = asyncio.create_task(store.reset_projections(["p[0/2]", "p[1/2]"], [COUNTS]))
        await until(lambda: reset.done() or _a_lock_is_awaited(url), what="the reset to wait")
        release.set()
        (outcome,) = await asyncio.gather(batch, return_exceptions=True)
        await reset

        assert outcome is None or isinstance(outcome, CheckpointMoved)
        assert await backend.read.find(COUNTS) == []  # the batch's increment went too
        assert await store.stored_checkpoints() == {}
        with pytest.raises(CheckpointMoved):
            await backend.read.apply("p[1/2]", 6, 7, _count)
        await backend.read.apply("p[1/2]", 0, 7, _count)
        assert await backend.read.find(COUNTS) == [{"name": "all", "n": 1}]
    finally:
        await backend.close()


async def _a_lock_is_awaited(url: str) -> bool:
    """Whether a session waits for a lock on this schema's tables or for a transaction."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(
            """
            SELECT count(*) FROM pg_locks WHERE NOT granted AND (locktype = 'transactionid'
              OR relation IN ('cqrskit_checkpoints'::regclass, 'reset_counts'::regclass))
            """
        )
        row = await cursor.fetchone()
    return bool(row and row[0])
