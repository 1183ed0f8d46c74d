"""Waiting until a committed transaction is visible to readers (below the horizon).

Readers see a transaction's events once every older transaction in the cluster has ended. An
append is acknowledged only then (or after ``timeout``), so that a caller who appended and then
reads (``read_all``, ``head_position``, a projection's catch-up) finds its own events, as on
every other backend. In the common case the transaction is visible at commit and nothing waits;
otherwise one poller checks the horizon for every waiting append at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from cqrskit.postgres._common import Connection, Pool

#: The first transaction id that is not yet visible to a reader starting now.
HORIZON_SQL = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"
log = logging.getLogger("cqrskit.postgres")


async def current_horizon(conn: Connection) -> int:
    """The oldest transaction id still running (every older one has ended)."""
    cursor = await conn.execute(HORIZON_SQL)
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class _Waiter:
    transaction_id: int
    deadline: float
    done: Callable[[], None]


class Horizon:
    """Calls ``done`` once a transaction is visible, or once ``timeout`` seconds have passed.

    The timeout bounds how long a long-running transaction elsewhere in the cluster can delay
    an acknowledgment; the append is committed either way.
    """

    def __init__(self, pool: Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._waiters: list[_Waiter] = []
        self._task: asyncio.Task[None] | None = None

    def when_visible(self, transaction_id: int, done: Callable[[], None]) -> None:
        """Call ``done`` once ``transaction_id`` (committed) is below the horizon."""
        if self._timeout <= 0:
            done()
            return
        deadline = time.monotonic() + self._timeout
        self._waiters.append(_Waiter(transaction_id, deadline, done))
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="cqrskit-postgres-horizon")

    async def close(self) -> None:
        """Stop watching and release every waiter."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._release(None, until=float("inf"))

    async def _watch(self) -> None:
        pause = 0.0005
        try:
            while self._waiters:
                self._release(await self._horizon(), until=time.monotonic())
                if self._waiters:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.02)
        finally:
            self._task = None

    async def _horizon(self) -> int | None:
        try:
            async with self._pool.connection() as conn:
                return await current_horizon(conn)
        except psycopg.Error as error:  # the deadline still releases the waiters
            log.warning("cannot read the transaction horizon: %s", error)
            return None

    def _release(self, horizon: int | None, *, until: float) -> None:
        """Release the waiters below ``horizon`` and those whose deadline is before ``until``."""
        waiting, late = [], 0
        for waiter in self._waiters:
            visible = horizon is not None and waiter.transaction_id < horizon
            if visible or waiter.deadline <= until:
                late += not visible
                waiter.done()
            else:
                waiting.append(waiter)
        self._waiters = waiting
        if late and horizon is not None:
            log.warning(
                "%d append(s) acknowledged before readers can see them: transaction %d is still"
                " running (see pg_stat_activity.backend_xid)",
                late,
                horizon,
            )
