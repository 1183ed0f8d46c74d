"""What the SQLite event store and read store share: connections, error translation, schema.

Private to the SQLite adapter (``cqrskit.sqlite``); nothing here is public API.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from cqrskit.errors import StoreUnavailable

BUSY_TIMEOUT = 10.0  # seconds another process may hold the write lock before we give up


def unavailable(path: Path, doing: str, error: BaseException) -> StoreUnavailable:
    """The :class:`StoreUnavailable` to raise for a driver ``error`` while ``doing`` something."""
    return StoreUnavailable(f"SQLite database {path}: {doing} failed: {error}")


def is_unavailable(error: sqlite3.Error) -> bool:
    """Whether ``error`` is about the database file or its state, not about our data or SQL."""
    return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or type(error) in (
        sqlite3.DatabaseError,
        sqlite3.Error,
    )


@contextlib.contextmanager
def translated(path: Path, doing: str) -> Iterator[None]:
    """Turn the driver's "cannot use the file" errors into :class:`StoreUnavailable`."""
    try:
        yield
    except sqlite3.Error as error:
        if is_unavailable(error):
            raise unavailable(path, doing, error) from error
        raise


def connect(
    path: Path, *, synchronous: str, writer: bool, page_size: int | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), usable from any thread.

    ``page_size`` applies only when the writer creates the file.
    """
    with translated(path, "opening"):
        connection = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            if writer:
                if page_size is not None:
                    connection.execute(f"PRAGMA page_size={int(page_size)}")
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreUnavailable(
                        f"SQLite database {path}: cannot use WAL mode (journal mode {mode})"
                    )
            connection.execute(f"PRAGMA synchronous={synchronous}")
        except BaseException:
            connection.close()
            raise
    return connection


def migrate(
    connection: sqlite3.Connection, path: Path, component: str, migrations: Sequence[Sequence[str]]
) -> None:
    """Bring ``component``'s tables up to the newest schema, recorded in ``cqrskit_schema``."""
    with translated(path, "creating the schema"):
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS cqrskit_schema "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = connection.execute(
                "SELECT version FROM cqrskit_schema WHERE component = ?", (component,)
            ).fetchone()
            current = row[0] if row else 0
            if current > len(migrations):
                raise StoreUnavailable(
                    f"SQLite database {path}: {component} schema version {current} was written "
                    f"by a newer cqrskit (this one knows up to {len(migrations)})"
                )
            for statements in migrations[current:]:
                for statement in statements:
                    connection.execute(statement)
            connection.execute(
                "INSERT INTO cqrskit_schema (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, len(migrations)),
            )
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any (SQLite may already have rolled it back)."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


class ReadConnections:
    """One read connection per thread, opened on first use, all closed by :meth:`close`."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._synchronous = synchronous
        self._connections: dict[int, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> sqlite3.Connection:
        connection = self._connections.get(threading.get_ident())
        if connection is not None:
            return connection
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"SQLite database {self._path}: the store is closed")
            connection = connect(self._path, synchronous=self._synchronous, writer=False)
            self._connections[threading.get_ident()] = connection
            return connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
