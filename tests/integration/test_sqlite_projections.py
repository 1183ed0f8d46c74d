"""Projections on SQLite across processes: two runners of one projection never apply an event
twice, and a runner killed inside a batch leaves nothing of it behind.

SQLite offers no lease: both runners work, and the compare-and-set checkpoint (under SQLite's
write lock) makes the loser of each race roll its batch back and resume from the winner's.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit import Backend
from cqrskit.backends import open_backend
from tests.support.ticks import append_ticks, assert_applied_once, line, spawn, ticks


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = await open_backend(f"sqlite:///{tmp_path / 'events.db'}")
    yield backend
    await backend.close()


async def test_two_runner_processes_never_apply_an_event_twice(sqlite_backend: Backend) -> None:
    url, count = sqlite_backend.url, 2000
    await sqlite_backend.read.setup(ticks.tables)
    target = await append_ticks(sqlite_backend, count)
    children = [await spawn(url, "race", target, pause=0.0002) for _ in range(2)]
    applied = [int(await line(child, timeout=120)) for child in children]
    for child in children:
        assert await child.wait() == 0
    assert sum(applied) == count  # each runner counts only the batches it committed
    await assert_applied_once(sqlite_backend, count)


async def test_a_runner_killed_inside_a_batch_is_resumed_by_another(
    sqlite_backend: Backend,
) -> None:
    url, count = sqlite_backend.url, 500
    await sqlite_backend.read.setup(ticks.tables)
    target = await append_ticks(sqlite_backend, count)
    first = await spawn(url, "race", target, pause=0, block_at=120)  # inside the third batch
    assert await line(first) == "blocked"
    os.kill(first.pid, signal.SIGKILL)
    await first.wait()
    assert await sqlite_backend.read.checkpoint(ticks.name) == 100
    second = await spawn(url, "race", target, pause=0)
    assert int(await line(second)) == count - 100
    assert await second.wait() == 0
    await assert_applied_once(sqlite_backend, count)
