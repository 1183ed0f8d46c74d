"""Projections on PostgreSQL across processes: never applied twice, taken over when one dies.

The test projection counts events (a total, and how often each event was applied): if any
event were applied twice or skipped, the counts would show it. The child processes apply it
slowly so that batches overlap and a kill lands inside one.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from cqrskit import Backend
from cqrskit.postgres import PostgresReadStore, open_backend
from tests.support.ticks import (
    append_ticks,
    assert_applied_once,
    line,
    spawn,
    ticks,
)

pytestmark = pytest.mark.postgres


async def test_two_runner_processes_never_apply_an_event_twice(pg_backend: Backend) -> None:
    url, count = pg_backend.url, 2000
    await pg_backend.read.setup(ticks.tables)
    target = await append_ticks(pg_backend, count)
    children = [await spawn(url, "race", target, pause=0.0002) for _ in range(2)]
    applied = [int(await line(child, timeout=120)) for child in children]
    for child in children:
        assert await child.wait() == 0
    assert sum(applied) == count  # each runner counts only the batches it committed
    await assert_applied_once(pg_backend, count)


async def test_a_standby_takes_the_lease_when_the_runner_is_killed(pg_backend: Backend) -> None:
    url, count = pg_backend.url, 1500
    await pg_backend.read.setup(ticks.tables)
    target = await append_ticks(pg_backend, count)
    # The first runner commits one batch of 50, then stops dead inside the second.
    first = await spawn(url, "lease", target, pause=0, block_at=75)
    assert await line(first) == "waiting"
    assert await line(first) == "leased"
    standby = await spawn(url, "lease", target, pause=0)
    assert await line(standby) == "waiting"
    assert await line(first) == "blocked"
    with pytest.raises(TimeoutError):
        await line(standby, timeout=0.2)  # the standby still waits for the lease
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    fiftieth = (await pg_backend.events.read_all(0, 50))[-1].position
    assert await pg_backend.read.checkpoint(ticks.name) == fiftieth  # the batch killed: undone

    assert await line(standby) == "leased"
    assert int(await line(standby)) == count - 50
    assert await standby.wait() == 0
    await assert_applied_once(pg_backend, count)


async def test_a_lease_is_held_until_released(pg_backend: Backend) -> None:
    assert isinstance(pg_backend.read, PostgresReadStore)
    other = await open_backend(pg_backend.url)
    assert isinstance(other.read, PostgresReadStore)
    try:
        async with pg_backend.read.acquire_lease("p"):
            waiting = asyncio.create_task(_hold(other.read, "p"))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            async with other.read.acquire_lease("another projection"):
                pass  # leases of other projections are independent
        async with asyncio.timeout(5):
            await waiting
    finally:
        await other.close()


async def _hold(read: PostgresReadStore, projection: str) -> None:
    async with read.acquire_lease(projection, poll_interval=0.05):
        pass
