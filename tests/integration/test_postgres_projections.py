"""Projections on PostgreSQL across processes: never applied twice, taken over when one dies.

The test projection counts events (a total, and how often each event was applied): if any
event were applied twice or skipped, the counts would show it. The child processes apply it
slowly so that batches overlap and a kill lands inside one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cqrskit import (
    Backend,
    Column,
    ColumnType,
    Event,
    EventCodec,
    Projection,
    ProjectionRunner,
    ReadStore,
    RecordedEvent,
    Table,
    ViewTransaction,
)
from cqrskit.memory import InMemoryReadStore
from cqrskit.postgres import PostgresReadStore, open_backend
from tests.support.postgres import fresh_url

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


class Ticked(Event, frozen=True, kw_only=True):
    n: int


TOTALS = Table(
    "tick_totals",
    columns=(Column("name", ColumnType.TEXT), Column("count", ColumnType.INTEGER)),
    key=("name",),
)
APPLIED = Table(
    "tick_applied",
    columns=(Column("event_id", ColumnType.TEXT), Column("times", ColumnType.INTEGER)),
    key=("event_id",),
)
ticks = Projection("ticks", tables=[TOTALS, APPLIED])
CODEC = EventCodec([Ticked])
PAUSE = float(os.environ.get("TICKS_PAUSE", "0"))  # seconds per event, in child processes


@ticks.on(Ticked)
def _count(event: Ticked, recorded: RecordedEvent, view: ViewTransaction) -> None:
    if PAUSE:
        time.sleep(PAUSE)
    total = view.get(TOTALS, "all") or {"name": "all", "count": 0}
    total["count"] += 1
    view.put(TOTALS, total)
    applied = view.get(APPLIED, str(recorded.event_id))
    view.put(
        APPLIED,
        {"event_id": str(recorded.event_id), "times": (applied or {"times": 0})["times"] + 1},
    )


CHILD = """
import asyncio, sys
from cqrskit import ProjectionRunner
from cqrskit.postgres import open_backend
from tests.integration.test_postgres_projections import CODEC, ticks

async def main(url, mode, target):
    backend = await open_backend(url)
    runner = ProjectionRunner(
        ticks, backend.events, backend.read, CODEC, batch_size=50, use_lease=mode == "lease"
    )
    if mode == "lease":
        print("waiting", flush=True)
    await run(runner, backend, target, announce=mode == "lease")
    print(runner.status.events_applied, flush=True)
    await backend.close()

async def run(runner, backend, target, announce):
    task = asyncio.create_task(runner.run())
    if announce:  # the runner takes the projection's lease before it runs
        while not runner.status.running:
            await asyncio.sleep(0.01)
        print("leased", flush=True)
    while await backend.read.checkpoint(ticks.name) < target:
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.fixture
async def pg_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    backend = await open_backend(fresh_url(request))
    yield backend
    await backend.close()


async def _append_ticks(backend: Backend, count: int) -> int:
    async def stream(n: int) -> None:
        events = [CODEC.new_event(Ticked(n=i)) for i in range(count // 10)]
        await backend.events.append(f"ticks-{n}-{uuid.uuid4().hex}", events, 0)

    await asyncio.gather(*(stream(n) for n in range(10)))
    return await backend.events.head_position()


async def _spawn(url: str, mode: str, target: int, pause: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, mode, str(target),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "TICKS_PAUSE": str(pause)},
    )  # fmt: skip


async def _line(child: asyncio.subprocess.Process, timeout: float = 30) -> str:
    assert child.stdout is not None
    async with asyncio.timeout(timeout):
        return (await child.stdout.readline()).decode().strip()


async def _tables(read: ReadStore) -> dict[str, list[dict[str, Any]]]:
    return {table.name: await read.find(table, order_by=table.key) for table in ticks.tables}


async def _full_replay(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    read = InMemoryReadStore()
    runner = ProjectionRunner(ticks, backend.events, read, CODEC)
    await runner.setup()
    await runner.catch_up()
    return await _tables(read)


async def _assert_applied_once(backend: Backend, count: int) -> None:
    assert await backend.read.get(TOTALS, "all") == {"name": "all", "count": count}
    applied = await backend.read.find(APPLIED)
    assert len(applied) == count
    assert {row["times"] for row in applied} == {1}
    assert await _tables(backend.read) == await _full_replay(backend)


async def test_two_runner_processes_never_apply_an_event_twice(pg_backend: Backend) -> None:
    url, count = pg_backend.url, 2000
    await pg_backend.read.setup(ticks.tables)
    target = await _append_ticks(pg_backend, count)
    children = [await _spawn(url, "race", target, pause=0.0002) for _ in range(2)]
    applied = [int(await _line(child, timeout=120)) for child in children]
    for child in children:
        assert await child.wait() == 0
    assert sum(applied) == count  # each runner counts only the batches it committed
    await _assert_applied_once(pg_backend, count)


async def test_a_standby_takes_the_lease_when_the_runner_is_killed(pg_backend: Backend) -> None:
    url, count = pg_backend.url, 1500
    await pg_backend.read.setup(ticks.tables)
    target = await _append_ticks(pg_backend, count)
    first = await _spawn(url, "lease", target, pause=0.002)
    assert await _line(first) == "waiting"
    assert await _line(first) == "leased"
    standby = await _spawn(url, "lease", target, pause=0)
    assert await _line(standby) == "waiting"
    async with asyncio.timeout(30):
        while True:
            if await pg_backend.read.checkpoint(ticks.name) > 0:
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.15)  # well inside a batch of 50 events at 2 ms each
    with pytest.raises(TimeoutError):
        await _line(standby, timeout=0.2)  # the standby still waits for the lease
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    stopped_at = await pg_backend.read.checkpoint(ticks.name)
    assert 0 < stopped_at < target, "the kill came too late"

    assert await _line(standby) == "leased"
    assert int(await _line(standby, timeout=60)) > 0
    assert await standby.wait() == 0
    await _assert_applied_once(pg_backend, count)


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
