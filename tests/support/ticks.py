"""A projection that counts events, for tests of runners in several processes.

It keeps a total and how often each event was applied: an event applied twice or skipped
shows in the counts. Child processes (:data:`CHILD`) run it slowly (``TICKS_PAUSE`` seconds per
event) so that batches overlap, and can stop dead inside a batch (``TICKS_BLOCK_AT``: the n-th
event this process applies prints ``blocked`` and never returns), so that a kill lands there.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

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
BLOCK_AT = int(os.environ.get("TICKS_BLOCK_AT", "0"))  # the event at which a child stops dead
_handled = 0


@ticks.on(Ticked)
def _count(event: Ticked, recorded: RecordedEvent, view: ViewTransaction) -> None:
    global _handled
    _handled += 1
    if _handled == BLOCK_AT:
        print("blocked", flush=True)
        threading.Event().wait()  # inside a batch, until the process is killed
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


#: A child process that runs the projection until its checkpoint reaches a target, then
#: prints how many events it applied. ``lease`` mode takes the projection's lease first
#: (printing ``waiting``, then ``leased``); ``race`` mode runs without one.
CHILD = """
import asyncio, sys
from cqrskit import ProjectionRunner
from cqrskit.backends import open_backend
from tests.support.ticks import CODEC, ticks

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


async def append_ticks(backend: Backend, count: int) -> int:
    """``count`` events over 10 streams, appended concurrently; the head after them."""

    async def stream(n: int) -> None:
        events = [CODEC.new_event(Ticked(n=i)) for i in range(count // 10)]
        await backend.events.append(f"ticks-{n}-{uuid.uuid4().hex}", events, 0)

    await asyncio.gather(*(stream(n) for n in range(10)))
    return await backend.events.head_position()


async def spawn(
    url: str, mode: str, target: int, pause: float, block_at: int = 0
) -> asyncio.subprocess.Process:
    env = {**os.environ, "TICKS_PAUSE": str(pause), "TICKS_BLOCK_AT": str(block_at)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, mode, str(target),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def line(child: asyncio.subprocess.Process, timeout: float = 60) -> str:
    assert child.stdout is not None
    async with asyncio.timeout(timeout):
        return (await child.stdout.readline()).decode().strip()


async def tables(read: ReadStore) -> dict[str, list[dict[str, Any]]]:
    return {table.name: await read.find(table, order_by=table.key) for table in ticks.tables}


async def full_replay(backend: Backend) -> dict[str, list[dict[str, Any]]]:
    read = InMemoryReadStore()
    runner = ProjectionRunner(ticks, backend.events, read, CODEC)
    await runner.setup()
    await runner.catch_up()
    return await tables(read)


async def assert_applied_once(backend: Backend, count: int) -> None:
    assert await backend.read.get(TOTALS, "all") == {"name": "all", "count": count}
    applied = await backend.read.find(APPLIED)
    assert len(applied) == count
    assert {row["times"] for row in applied} == {1}
    assert await tables(backend.read) == await full_replay(backend)
