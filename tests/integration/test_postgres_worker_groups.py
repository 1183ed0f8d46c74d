"""Worker groups on PostgreSQL: members are the connections holding the group's lock, a
partition has one holder at a time, and leaving (or losing the connection) lets go of all."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from cqrskit import Backend, WorkerGroups
from cqrskit.postgres import open_backend
from cqrskit.workers import WorkerGroup
from tests.support.postgres import fresh_url
from tests.support.waiting import until

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    backend = await open_backend(fresh_url(request))
    yield backend
    await backend.close()


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
