"""What the SQLite store modules share: URLs, connections, error translation, the events table.

Private to the SQLite adapter (``cqrskit.sqlite``); nothing here is public API.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cqrskit.errors import ConfigurationError, StoreUnavailable, TableMissing

#: Seconds to wait for the write lock another process holds before giving up (and answering
#: "unavailable"): short, so that a request during a long lock is answered within about 2 s.
BUSY_TIMEOUT = 2.0

#: The columns of the ``events`` table, in the order its rows are inserted and read.
EVENT_COLUMNS = (
    "position, stream_id, stream_version, event_id, event_type, schema_version, data, "
    "metadata, recorded_at"
)
HEAD_SQL = "SELECT coalesce(max(position), 0) FROM events"
STREAM_VERSION_SQL = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
#: ``recorded_at`` is stored as whole microseconds since the Unix epoch (UTC).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_url(url: str) -> tuple[Path, bool]:
    """The file and the ``risk_recent_commits_on_power_loss`` flag of a ``sqlite:///`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigurationError(f"invalid SQLite URL {url!r}: use sqlite:///path/to/file.db")
    location, _, query = url[len(prefix) :].partition("?")
    risky = False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "risk_recent_commits_on_power_loss" or value.lower() not in _TRUE | _FALSE:
            raise ConfigurationError(f"unsupported SQLite URL option {name}={value!r}")
        risky = value.lower() in _TRUE
    return Path(location).expanduser(), risky


def synchronous_mode(risk_recent_commits_on_power_loss: bool) -> str:
    """The ``PRAGMA synchronous`` setting: FULL (an acknowledged commit survives power loss)."""
    return "NORMAL" if risk_recent_commits_on_power_loss else "FULL"


def unavailable(path: Path, doing: str, error: BaseException) -> StoreUnavailable:
    """The :class:`StoreUnavailable` to raise for a driver ``error`` while ``doing`` something."""
    return StoreUnavailable(f"SQLite database {path}: {doing} failed: {error}")


def closed(path: Path) -> StoreUnavailable:
    """The :class:`StoreUnavailable` to raise when a closed store is used."""
    return StoreUnavailable(f"SQLite database {path}: the store is closed")


def is_unavailable(error: sqlite3.Error) -> bool:
    """Whether ``error`` is about the database file or its state, not about our data or SQL."""
    return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or type(error) in (
        sqlite3.DatabaseError,
        sqlite3.Error,
    )


def missing_table(error: sqlite3.Error) -> str | None:
    """The table ``error`` says does not exist, if that is what it says."""
    message = str(error)
    if isinstance(error, sqlite3.OperationalError) and message.startswith(_NO_SUCH_TABLE):
        return message.removeprefix(_NO_SUCH_TABLE)
    return None


_NO_SUCH_TABLE = "no such table: "


@contextlib.contextmanager
def translated(path: Path, doing: str, *, read_model: bool = False) -> Iterator[None]:
    """Turn the driver's "cannot use the file" errors into :class:`StoreUnavailable` (and,
    for ``read_model`` tables, a missing table into :class:`TableMissing`)."""
    try:
        yield
    except sqlite3.Error as error:
        table = missing_table(error) if read_model else None
        if table is not None:
            raise TableMissing(table) from error
        if is_unavailable(error):
            raise unavailable(path, doing, error) from error
        raise


def _bind_bytes_as_they_are() -> None:
    # sqlite3 binds int, float, str and bytearray parameters at once, but looks for an adapter
    # for every bytes value first: two failed attribute lookups, each building an
    # AttributeError (~3,000 instructions per value; an event appended binds three). An
    # identity adapter makes that one dict lookup. An application's own adapter for bytes,
    # if it registered one, is left in place.
    sqlite3.adapters.setdefault((bytes, sqlite3.PrepareProtocol), bytes)


def connect(
    path: Path, *, synchronous: str, writer: bool, page_size: int | None = None
) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), usable from any thread.

    ``page_size`` applies only when the writer creates the file.
    """
    _bind_bytes_as_they_are()
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
                raise closed(self._path)
            connection = connect(self._path, synchronous=self._synchronous, writer=False)
            self._connections[threading.get_ident()] = connection
            return connection

    def fetch_all(
        self, sql: str, parameters: Sequence[Any], *, read_model: bool = False
    ) -> list[Any]:
        """The rows of a read-only query, run on this thread's read connection."""
        with translated(self._path, "reading", read_model=read_model):
            return self.get().execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()
