"""The PostgreSQL schema: an ordered list of migrations and the function that applies them."""

from __future__ import annotations

import psycopg

from cqrskit.errors import ConfigurationError, StoreUnavailable
from cqrskit.migrations import Migration, latest_version, pending
from cqrskit.postgres._common import (
    Connection,
    advisory_key,
    connect_kwargs,
    describe,
    translate_errors,
)
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
    return max(current, LATEST_VERSION)


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
