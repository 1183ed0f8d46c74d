"""The SQLite schemas: the migrations of each file, and opening a file with its schema up to date.

Each file records in ``cqrskit_schema`` one row per schema it holds: (name, version reached).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cqrskit.errors import StoreUnavailable
from cqrskit.migrations import Migration, latest_version, pending
from cqrskit.sqlite._common import connect, rollback, synchronous_mode, translated


@dataclass(frozen=True)
class Schema:
    """The tables of one kind of file: its name in ``cqrskit_schema`` and its migrations."""

    name: str
    migrations: tuple[Migration, ...]
    #: The page size the file is created with (SQLite's default when None).
    page_size: int | None = None


# Append new steps at the end; never edit a step that has shipped.
EVENTS = Schema(
    "events",
    (
        Migration(
            1,
            "events and idempotency keys",
            (
                """CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,       -- the global position: dense, in commit order
        stream_id TEXT NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id BLOB NOT NULL UNIQUE,      -- the UUID's 16 bytes
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,       -- microseconds since the Unix epoch (UTC)
        UNIQUE (stream_id, stream_version)
    )""",
                """CREATE TABLE IF NOT EXISTS idempotency_keys (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        position INTEGER NOT NULL
    ) WITHOUT ROWID""",
            ),
        ),
        Migration(
            2,
            "snapshots of long streams' states",
            (
                """CREATE TABLE IF NOT EXISTS snapshots (
        stream_id TEXT NOT NULL,
        kind TEXT NOT NULL,                 -- which state (the decider's state type)
        state_version INTEGER NOT NULL,     -- the state's schema version ...
        state_shape TEXT NOT NULL,          -- ... and a hash of its fields
        stream_version INTEGER NOT NULL,    -- the state after this many events
        state BLOB NOT NULL,
        taken_at INTEGER NOT NULL,          -- microseconds since the Unix epoch (UTC)
        PRIMARY KEY (stream_id, kind, state_version)
    )""",
            ),
        ),
    ),
    # Small pages: a group commit dirties one leaf of the stream index per stream it touches,
    # scattered over the file, and every dirty page is written (and fsynced) whole to the WAL.
    # 1 KiB pages make each durable group commit write a quarter of the bytes of 4 KiB pages.
    page_size=1024,
)
READ_MODEL = Schema(
    "read_model",
    (
        Migration(
            1,
            "projection checkpoints",
            (
                "CREATE TABLE IF NOT EXISTS cqrskit_checkpoints "
                "(projection TEXT PRIMARY KEY, position INTEGER NOT NULL)",
            ),
        ),
    ),
)


@dataclass(frozen=True)
class OpenedFile:
    """A store's file, open: its write connection and the mode its read connections use."""

    path: Path
    writer: sqlite3.Connection
    synchronous: str


async def open_file(path: str | Path, schema: Schema, *, risky: bool) -> OpenedFile:
    """Open (creating if needed) the file ``path`` and bring ``schema`` up to date in it;
    ``risky`` is ``risk_recent_commits_on_power_loss`` (see :func:`synchronous_mode`).

    Raises :class:`StoreUnavailable` when the file cannot be opened or is not a database.
    """
    path = Path(path)
    synchronous = synchronous_mode(risky)

    def prepare() -> sqlite3.Connection:
        writer = connect(path, synchronous=synchronous, writer=True, page_size=schema.page_size)
        try:
            migrate(writer, path, schema)
        except BaseException:
            writer.close()
            raise
        return writer

    return OpenedFile(path, await asyncio.to_thread(prepare), synchronous)


def migrate(connection: sqlite3.Connection, path: Path, schema: Schema) -> None:
    """Bring ``schema``'s tables up to date, recorded in ``cqrskit_schema``."""
    latest = latest_version(schema.migrations)
    with translated(path, "creating the schema"):
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS cqrskit_schema "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = connection.execute(
                "SELECT version FROM cqrskit_schema WHERE component = ?", (schema.name,)
            ).fetchone()
            current = row[0] if row else 0
            if current > latest:
                raise StoreUnavailable(
                    f"SQLite database {path}: {schema.name} schema version {current} was "
                    f"written by a newer cqrskit (this one knows up to {latest})"
                )
            for migration in pending(schema.migrations, current):
                for statement in migration.statements:
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO cqrskit_schema (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (schema.name, latest),
            )
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
