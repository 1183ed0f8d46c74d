"""The PostgreSQL read store: read-model tables, compare-and-set checkpoints, projection leases.

A batch (:meth:`PostgresReadStore.apply`) runs in a worker thread on a synchronous connection,
because the projection's ``write`` callback is synchronous and its row loads need the database:
the checkpoint is moved first (a compare-and-set that also locks the checkpoint row, so a second
runner waits and then fails instead of doing the work twice), then the handlers run over a
:class:`~cqrskit.readmodel.UnitOfWork`, then each table's changes are written with one bulk
upsert and one bulk delete, and everything commits together. Queries are async, on a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_dumps, set_json_loads

from cqrskit.errors import CheckpointMoved, ConfigurationError
from cqrskit.postgres._common import (
    Pool,
    advisory_key,
    connect_kwargs,
    describe,
    fetch_all,
    pool_options,
    translate_errors,
)
from cqrskit.postgres._groups import group_members, join_group
from cqrskit.postgres._schema import SCHEMA_LOCK
from cqrskit.postgres._tables import BUILDERS, columns_of, create_statements, dump, keys_of
from cqrskit.readmodel import Key, Row, Table, UnitOfWork, ViewTransaction
from cqrskit.workers import WorkerGroup

SyncConnection = psycopg.Connection[TupleRow]

_json_encoder = msgspec.json.Encoder(decimal_format="string")

_MOVE_CHECKPOINT = """
UPDATE cqrskit_checkpoints SET position = %(position)s, updated_at = now()
WHERE projection = %(projection)s AND position = %(expected)s
"""
_CREATE_CHECKPOINT = """
INSERT INTO cqrskit_checkpoints (projection, position) VALUES (%(projection)s, %(position)s)
ON CONFLICT (projection) DO NOTHING
"""
_SET_CHECKPOINT = """
INSERT INTO cqrskit_checkpoints (projection, position) VALUES (%s, 0)
ON CONFLICT (projection) DO UPDATE SET position = 0, updated_at = now()
"""
_GET_CHECKPOINT = "SELECT position FROM cqrskit_checkpoints WHERE projection = %s"
_GET_SOURCE = "SELECT store_id::text FROM cqrskit_sources WHERE projection = %s"
_SET_SOURCE = """
INSERT INTO cqrskit_sources (projection, store_id) VALUES (%s, %s::uuid)
ON CONFLICT (projection) DO UPDATE SET store_id = excluded.store_id
"""
_FORGET_SOURCE = "DELETE FROM cqrskit_sources WHERE projection = %s"
_FORGET_CHECKPOINT = "DELETE FROM cqrskit_checkpoints WHERE projection = %s"
_ALL_CHECKPOINTS = "SELECT projection, position FROM cqrskit_checkpoints"
# Every batch writes its checkpoint first: EXCLUSIVE waits for the batches in flight to commit
# and holds the next ones back until the reset has committed (they find their checkpoint gone).
# Taken before any table's lock, so that no batch holds a lock the reset waits for: no deadlock.
_HOLD_CHECKPOINTS = "LOCK TABLE cqrskit_checkpoints IN EXCLUSIVE MODE"
_FORGET_CHECKPOINTS = "DELETE FROM cqrskit_checkpoints WHERE projection = ANY(%s)"
_FORGET_SOURCES = "DELETE FROM cqrskit_sources WHERE projection = ANY(%s)"
_EXISTING = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY 1
"""


def _configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    # msgspec reads and writes JSON columns: faster than the json module, and it encodes
    # whatever a ColumnType.JSON value may hold (Decimal included).
    set_json_dumps(_json_encoder.encode, context=conn)
    set_json_loads(msgspec.json.decode, context=conn)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    _configure(conn)
    await conn.execute("SET TIME ZONE 'UTC'")


def _configure_sync(conn: psycopg.Connection[Any]) -> None:
    _configure(conn)
    conn.execute("SET TIME ZONE 'UTC'")


class PostgresReadStore:
    """A :class:`~cqrskit.ReadStore` on PostgreSQL (use :func:`cqrskit.postgres.open_backend`).

    Column types map to ``text COLLATE "C"``, ``bigint``, ``jsonb`` and ``timestamptz``.
    :meth:`acquire_lease` lets one process at a time run a projection.
    """

    def __init__(
        self, url: str, pool: Pool, writer_pool: psycopg_pool.ConnectionPool[SyncConnection]
    ) -> None:
        self._url = url
        self._where = describe(url)
        self._pool = pool
        self._writers = writer_pool
        self._queries: dict[tuple[Any, ...], sql.Composed] = {}

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 5, writers: int = 4) -> PostgresReadStore:
        """Connect to the (migrated) database at ``url``."""
        options = pool_options(url)
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=1, max_size=pool_size, configure=_configure_async,
            name="cqrskit-read", **options,
        )  # fmt: skip
        writer_pool = psycopg_pool.ConnectionPool(
            url, min_size=0, max_size=writers, configure=_configure_sync,
            name="cqrskit-projections", **options,
        )  # fmt: skip
        with translate_errors(describe(url)):
            await pool.open(wait=True)
            writer_pool.open()
        return cls(url, pool, writer_pool)

    async def setup(self, tables: Sequence[Table]) -> None:
        with translate_errors(self._where):
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for table in tables:
                    for statement in create_statements(table):
                        await conn.execute(statement)
                    await _check_columns(conn, table)

    async def checkpoint(self, projection: str) -> int:
        rows = await fetch_all(self._pool, self._where, _GET_CHECKPOINT, (projection,))
        return int(rows[0][0]) if rows else 0

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        await asyncio.to_thread(self._apply, projection, expected, position, write)

    def _apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        with (
            translate_errors(self._where, read_model=True),
            self._writers.connection() as conn,
            conn.transaction(),
        ):
            _move_checkpoint(conn, projection, expected, position)
            unit = UnitOfWork(
                lambda table, key: self._load(conn, table, key), atomic_increments=True
            )
            write(unit)
            for table, upserts, deletes in unit.changes():
                if upserts:
                    conn.execute(self._query("upsert", table), columns_of(table, upserts))
                if deletes:
                    conn.execute(self._query("delete", table), keys_of(table, deletes))
            # Last, so that the rows every partition shares stay locked only until the commit.
            for table, sums in unit.increments():
                conn.execute(self._query("increment", table), columns_of(table, sums))

    def _load(self, conn: SyncConnection, table: Table, key: Key) -> Row | None:
        cursor = conn.execute(self._query("get", table), key)
        row = cursor.fetchone()
        return None if row is None else dict(zip(table.column_names, row, strict=True))

    async def reset(self, projection: str, tables: Sequence[Table]) -> None:
        with translate_errors(self._where, read_model=True):
            async with self._pool.connection() as conn, conn.transaction():
                if tables:
                    names = sql.SQL(", ").join(sql.Identifier(table.name) for table in tables)
                    await conn.execute(sql.SQL("TRUNCATE {}").format(names))
                await conn.execute(_SET_CHECKPOINT, (projection,))
                await conn.execute(_FORGET_SOURCE, (projection,))

    async def reset_projections(self, projections: Sequence[str], tables: Sequence[Table]) -> None:
        """Reset ``projections`` together (see :class:`cqrskit.WorkerGroups`)."""
        with translate_errors(self._where, read_model=True):
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(_HOLD_CHECKPOINTS)
                cursor = await conn.execute(_EXISTING, ([table.name for table in tables],))
                existing = [str(row[0]) for row in await cursor.fetchall()]
                if existing:
                    names = sql.SQL(", ").join(sql.Identifier(name) for name in existing)
                    await conn.execute(sql.SQL("TRUNCATE {}").format(names))
                await conn.execute(_FORGET_CHECKPOINTS, (list(projections),))
                await conn.execute(_FORGET_SOURCES, (list(projections),))

    async def stored_checkpoints(self) -> dict[str, int]:
        rows = await fetch_all(self._pool, self._where, _ALL_CHECKPOINTS, ())
        return {str(name): int(position) for name, position in rows}

    async def drop(self, projection: str, tables: Sequence[str]) -> None:
        with translate_errors(self._where):
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for name in tables:
                    await conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name))
                    )
                await conn.execute(_FORGET_CHECKPOINT, (projection,))
                await conn.execute(_FORGET_SOURCE, (projection,))

    async def source(self, projection: str) -> str | None:
        rows = await fetch_all(self._pool, self._where, _GET_SOURCE, (projection,))
        return str(rows[0][0]) if rows else None

    async def record_source(self, projection: str, store_id: str) -> None:
        with translate_errors(self._where):
            async with self._pool.connection() as conn:
                await conn.execute(_SET_SOURCE, (projection, store_id))

    async def get(self, table: Table, *key: Any) -> Row | None:
        rows = await self._select(self._query("get", table), key, table)
        return rows[0] if rows else None

    async def find(
        self,
        table: Table,
        *,
        where: Mapping[str, Any] | None = None,
        order_by: Sequence[str] = (),
        after: Sequence[Any] | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Row]:
        conditions = dict(where or {})
        nulls = tuple(name for name, value in conditions.items() if value is None)
        equal = tuple(name for name, value in conditions.items() if value is not None)
        keyset = after is not None and bool(order_by)
        query = self._query("find", table, equal, nulls, tuple(order_by), keyset, descending)
        params: list[Any] = [dump(table, name, conditions[name]) for name in equal]
        if keyset:
            assert after is not None
            params.extend(
                dump(table, name, value) for name, value in zip(order_by, after, strict=True)
            )
        params.append(limit)
        return await self._select(query, params, table)

    @contextlib.asynccontextmanager
    async def acquire_lease(
        self, projection: str, *, poll_interval: float = 0.5
    ) -> AsyncIterator[None]:
        """Hold the lease of ``projection`` for the duration of the ``async with`` block.

        The lease is a session-level advisory lock on a connection of its own: a second
        process asking for the same projection's lease waits (checking every
        ``poll_interval`` seconds) until the holder leaves the block, or dies and its
        connection drops. Correctness does not rest on the lease (a batch's checkpoint is
        compare-and-set); it keeps a standby from doing work that would be rolled back.
        """
        with translate_errors(self._where):
            conn = await psycopg.AsyncConnection.connect(self._url, **connect_kwargs(self._url))
        try:
            with translate_errors(self._where):
                cursor = await conn.execute("SELECT current_schema()")
                schema = await cursor.fetchone()
                key = advisory_key("cqrskit", "lease", str(schema[0] if schema else ""), projection)
                while True:
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    acquired = await cursor.fetchone()
                    if acquired and acquired[0]:
                        break
                    await asyncio.sleep(poll_interval)
            yield
        finally:
            await conn.close()  # ends the session, which releases the lock

    def join_group(self, group: str) -> contextlib.AbstractAsyncContextManager[WorkerGroup]:
        """Join worker group ``group`` (see :class:`cqrskit.WorkerGroups`): the membership and
        partition claims are advisory locks on a connection of its own, so a worker that dies
        leaves the group at once."""
        return join_group(self._url, self._where, group)

    async def group_members(self, group: str) -> list[str]:
        return await group_members(self._pool, self._where, group)

    async def close(self) -> None:
        await self._pool.close()
        await asyncio.to_thread(self._writers.close)

    async def _select(self, query: sql.Composed, params: Sequence[Any], table: Table) -> list[Row]:
        names = table.column_names
        rows = await fetch_all(self._pool, self._where, query, params, read_model=True)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _query(self, kind: str, table: Table, *shape: Any) -> sql.Composed:
        # Composed once per (kind, table, shape): psycopg then prepares it on the server.
        cache_key = (kind, table, *shape)
        query = self._queries.get(cache_key)
        if query is None:
            query = self._queries[cache_key] = BUILDERS[kind](table, *shape)
        return query


def _move_checkpoint(conn: SyncConnection, projection: str, expected: int, position: int) -> None:
    """Compare-and-set the checkpoint; the row stays locked until the transaction ends."""
    params = {"projection": projection, "expected": expected, "position": position}
    moved = conn.execute(_MOVE_CHECKPOINT, params).rowcount == 1
    if not moved and expected == 0:
        moved = conn.execute(_CREATE_CHECKPOINT, params).rowcount == 1
    if not moved:
        row = conn.execute(_GET_CHECKPOINT, (projection,)).fetchone()
        raise CheckpointMoved(projection, expected, int(row[0]) if row else 0)


async def _check_columns(conn: psycopg.AsyncConnection[Any], table: Table) -> None:
    cursor = await conn.execute(
        """
        SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = %s
        """,
        (table.name,),
    )
    existing = {row[0] for row in await cursor.fetchall()}
    if existing != set(table.column_names):
        raise ConfigurationError(
            f"read-model table {table.name!r} exists with columns {sorted(existing)}, "
            f"not {sorted(table.column_names)}: drop it and rebuild the projection"
        )
