"""The PostgreSQL schema: an ordered list of migrations and the function that applies them."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from cqrskit.errors import ConfigurationError, StoreUnavailable
from cqrskit.migrations import Migration, latest_version, pending
from cqrskit.postgres._common import (
    Connection,
    advisory_key,
    connect_kwargs,
    describe,
    ids_behind_message,
    translate_errors,
)
from cqrskit.readmodel import Table
from cqrskit.urls import redact

# Append new steps at the end; never edit a step that has shipped. Each applied step is a row
# (version, description) of ``cqrskit_schema_version``.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event store, idempotency keys, projection checkpoints",
        (
            # transaction_id + seq is the global order (see docs/postgres-ordering.md); the
            # default records the writing transaction's id, even inside a savepoint.
            # data and metadata are bytea: the encoded JSON comes back byte for byte.
            """
            CREATE TABLE cqrskit_events (
                transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
                seq integer NOT NULL,
                stream_id text COLLATE "C" NOT NULL,
                stream_version bigint NOT NULL,
                event_id uuid NOT NULL,
                event_type text NOT NULL,
                schema_version integer NOT NULL,
                data bytea NOT NULL,
                metadata bytea NOT NULL,
                recorded_at timestamptz NOT NULL,
                CONSTRAINT cqrskit_events_pkey PRIMARY KEY (transaction_id, seq),
                CONSTRAINT cqrskit_events_stream_version_key UNIQUE (stream_id, stream_version),
                CONSTRAINT cqrskit_events_seq_check CHECK (seq >= 0 AND seq < 1048576),
                CONSTRAINT cqrskit_events_version_check CHECK (stream_version > 0)
            )
            """,
            # Positions are NUMERIC: transaction ids are 64-bit, so position = xid * 2**20 + seq
            # does not fit a bigint in general.
            """
            CREATE TABLE cqrskit_idempotency (
                key text COLLATE "C" PRIMARY KEY,
                fingerprint text NOT NULL,
                stream_id text NOT NULL,
                version bigint NOT NULL,
                position numeric NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE cqrskit_checkpoints (
                projection text COLLATE "C" PRIMARY KEY,
                position numeric NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            )
            """,
        ),
    ),
    Migration(
        2,
        "snapshots of long streams' states",
        (
            """
            CREATE TABLE cqrskit_snapshots (
                stream_id text COLLATE "C" NOT NULL,
                kind text COLLATE "C" NOT NULL,
                state_version integer NOT NULL,
                state_shape text NOT NULL,
                stream_version bigint NOT NULL,
                state bytea NOT NULL,
                taken_at timestamptz NOT NULL,
                CONSTRAINT cqrskit_snapshots_pkey PRIMARY KEY (stream_id, kind, state_version)
            )
            """,
        ),
    ),
    Migration(
        3,
        "the store's identity and the store each projection was built from",
        (
            """
            CREATE TABLE cqrskit_identity (
                store_id uuid NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "INSERT INTO cqrskit_identity (store_id) VALUES (gen_random_uuid())",
            """
            CREATE TABLE cqrskit_sources (
                projection text COLLATE "C" PRIMARY KEY,
                store_id uuid NOT NULL
            )
            """,
        ),
    ),
)

LATEST_VERSION = latest_version(MIGRATIONS)
# One key for every schema change in the database (migrations and read-model tables), so that
# two processes starting at once never race on CREATE TABLE.
SCHEMA_LOCK = advisory_key("cqrskit", "schema")


async def migrate(url: str) -> int:
    """Bring the cqrskit schema at ``url`` up to date; return its version.

    Idempotent, and safe to run from several processes at once (a transaction-level advisory
    lock serialises them). Tables go into the first schema of the connection's
    ``search_path``. Raises :class:`StoreUnavailable` when the database cannot be reached or
    the user may not create tables, and :class:`ConfigurationError` when the database was
    migrated by a newer cqrskit.
    """
    where = describe(url)
    try:
        kwargs = connect_kwargs(url)
    except psycopg.ProgrammingError as error:
        raise StoreUnavailable(f"invalid PostgreSQL URL: {redact(str(error))}") from error
    with translate_errors(where):
        async with await psycopg.AsyncConnection.connect(url, **kwargs) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            current = await _current_version(conn)
            if current > LATEST_VERSION:
                raise ConfigurationError(
                    f"the database at {where} has cqrskit schema version {current}; "
                    f"this cqrskit knows versions up to {LATEST_VERSION}: upgrade cqrskit"
                )
            for migration in pending(MIGRATIONS, current):
                await _apply(conn, migration)
            newest, next_id = await _transaction_ids(conn)
            if newest is not None and newest >= next_id:
                raise ConfigurationError(ids_behind_message(where, newest, next_id))
    return max(current, LATEST_VERSION)


async def _transaction_ids(conn: Connection) -> tuple[int | None, int]:
    """The transaction id of the newest event (None if none) and the cluster's next one."""
    cursor = await conn.execute(
        """
        SELECT (SELECT transaction_id::text FROM cqrskit_events
                ORDER BY transaction_id DESC LIMIT 1),
               pg_snapshot_xmax(pg_current_snapshot())::text
        """
    )
    row = await cursor.fetchone()
    assert row is not None
    return (None if row[0] is None else int(row[0])), int(row[1])


async def advance_transaction_ids(url: str, *, chunk: int = 100_000) -> int:
    """Make the cluster at ``url`` hand out transaction ids above those of the stored events;
    return how many ids were used up (0 when it already does).

    For an event store restored (``pg_dump``) into a cluster whose transaction counter is
    behind the one it was dumped from: :func:`migrate` refuses such a database until this has
    run. Each id costs one empty transaction (about a million per minute).
    """
    where = describe(url)
    burnt = 0
    with translate_errors(where):
        async with await psycopg.AsyncConnection.connect(url, **connect_kwargs(url)) as conn:
            while True:
                newest, next_id = await _transaction_ids(conn)
                if newest is None or newest < next_id:
                    return burnt
                count = min(newest - next_id + 1, chunk)
                # COMMIT inside a DO block (outside a transaction): one new id per iteration.
                await conn.execute(
                    sql.SQL(
                        "DO $$ BEGIN FOR i IN 1..{} LOOP PERFORM pg_current_xact_id();"
                        " COMMIT; END LOOP; END $$"
                    ).format(sql.Literal(count))
                )
                burnt += count


async def _current_version(conn: Connection) -> int:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS cqrskit_schema_version (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM cqrskit_schema_version")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _apply(conn: Connection, migration: Migration) -> None:
    for statement in migration.statements:
        await conn.execute(statement)
    await conn.execute(
        "INSERT INTO cqrskit_schema_version (version, description) VALUES (%s, %s)",
        (migration.version, migration.description),
    )


async def store_exists(url: str) -> bool:
    """Whether the first schema of the connection's ``search_path`` holds an event store."""
    with translate_errors(describe(url)):
        async with await psycopg.AsyncConnection.connect(url, **connect_kwargs(url)) as conn:
            cursor = await conn.execute("SELECT to_regclass('cqrskit_events') IS NOT NULL")
            row = await cursor.fetchone()
    return bool(row and row[0])


async def delete_backend(url: str, tables: Sequence[Table] = ()) -> None:
    """Drop the event store, the read store's checkpoints and every ``cqrskit_`` table of the
    first schema of the ``search_path``, and the read-model ``tables``, in one transaction."""
    with translate_errors(describe(url)):
        conn = await psycopg.AsyncConnection.connect(url, **connect_kwargs(url))
        async with conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cursor = await conn.execute(
                """
                SELECT table_name FROM information_schema.tables
                WHERE table_schema = current_schema() AND table_name LIKE 'cqrskit\\_%'
                """
            )
            names = [row[0] for row in await cursor.fetchall()]
            if "cqrskit_projection_versions" in names:
                # Every projection version's tables, of versions this release does not declare
                # too: left behind, a later build of that version would start on stale rows.
                cursor = await conn.execute("SELECT versions FROM cqrskit_projection_versions")
                for (versions,) in await cursor.fetchall():
                    names.extend(name for version in versions for name in version["tables"])
            names.extend(table.name for table in tables)
            names = list(dict.fromkeys(names))
            if names:
                await conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                        sql.SQL(", ").join(sql.Identifier(name) for name in names)
                    )
                )
