"""Worker groups on PostgreSQL (:class:`cqrskit.WorkerGroups`): memberships and partition
claims as session advisory locks, all on one connection per worker.

A member holds the two-key lock ``(group key, member number)``; the live members are read from
``pg_locks``, so a worker that dies (or whose connection drops) leaves the group at once, with
nothing to clean up. A partition claim is the one-key lock of (schema, group, partition): the
one-key and two-key lock spaces never overlap.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from cqrskit.postgres._common import (
    Pool,
    advisory_key,
    connect_kwargs,
    fetch_all,
    translate_errors,
)

_MEMBERS = """
SELECT objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid::bigint = %s
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1
"""


class PostgresWorkerGroup:
    """This worker's membership of a group (see :func:`join_group`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], where: str, schema: str, group: str):
        self._conn = conn
        self._where = where
        self._schema = schema
        self._group = group
        self._group_key = _group_key(schema, group)
        self._number = 0

    @property
    def member(self) -> str:
        return str(self._number)

    async def _join(self) -> None:
        while not self._number:
            number = random.randrange(1, 2**31)
            if await self._ask("SELECT pg_try_advisory_lock(%s, %s)", self._group_key, number):
                self._number = number

    async def members(self) -> list[str]:
        with translate_errors(self._where):
            cursor = await self._conn.execute(_MEMBERS, (self._group_key,))
            return _member_ids(await cursor.fetchall())

    async def claim(self, partition: int) -> bool:
        return await self._ask("SELECT pg_try_advisory_lock(%s)", self._partition_key(partition))

    async def release(self, partition: int) -> None:
        await self._ask("SELECT pg_advisory_unlock(%s)", self._partition_key(partition))

    def _partition_key(self, partition: int) -> int:
        return advisory_key("cqrskit", "partition", self._schema, self._group, str(partition))

    async def _ask(self, query: str, *params: int) -> bool:
        with translate_errors(self._where):
            cursor = await self._conn.execute(query, params)
            row = await cursor.fetchone()
        return bool(row and row[0])


@contextlib.asynccontextmanager
async def join_group(url: str, where: str, group: str) -> AsyncIterator[PostgresWorkerGroup]:
    """Join ``group`` (in the database's current schema) on a connection of its own, closed
    (letting go of the membership and every claim) when the context ends."""
    with translate_errors(where):
        conn = await psycopg.AsyncConnection.connect(url, **connect_kwargs(url))
    try:
        with translate_errors(where):
            cursor = await conn.execute("SELECT current_schema()")
            schema = await cursor.fetchone()
        joined = PostgresWorkerGroup(conn, where, str(schema[0] if schema else ""), group)
        await joined._join()
        yield joined
    finally:
        await conn.close()


async def group_members(pool: Pool, where: str, group: str) -> list[str]:
    """The live members of ``group`` (in the database's current schema), without joining."""
    schema = await fetch_all(pool, where, "SELECT current_schema()", ())
    key = _group_key(str(schema[0][0] if schema else ""), group)
    return _member_ids(await fetch_all(pool, where, _MEMBERS, (key,)))


def _group_key(schema: str, group: str) -> int:
    # the first key of a two-key lock is 32 bits: that of the group, the second the member's
    return advisory_key("cqrskit", "group", schema, group) & 0x7FFFFFFF


def _member_ids(rows: Sequence[Sequence[Any]]) -> list[str]:
    return sorted(str(row[0]) for row in rows)
