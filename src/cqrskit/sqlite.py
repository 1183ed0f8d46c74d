"""SQLite backend: an event store with group commit and a read store, on stdlib ``sqlite3``.

``sqlite:///path/to/orders.db`` opens two files: the event store in ``orders.db`` and the read
model in the sibling ``orders.read.db``. SQLite has one write lock per file; keeping projection
writes in their own file means a rebuilding projection never makes an append wait, and the
read model can be deleted and rebuilt without touching the events. Nothing needs both files in
one transaction: a projection's writes and its checkpoint live together in the read file.

Both files use WAL (readers never block the writer) and ``synchronous=FULL``: an acknowledged
append or projection batch has been fsynced and survives a crash of the process or the machine.
``?risk_recent_commits_on_power_loss=1`` selects ``synchronous=NORMAL``, which survives a crash
of the process but may lose the last commits if the machine loses power.

The event store has one writer connection owned by a writer thread. Concurrent appends queue
up while the previous transaction is being fsynced; the thread then takes them all into one
transaction (group commit), each with its own version and idempotency checks, so one refused
append never affects the others, and one fsync acknowledges them all (see
``cqrskit._sqlite_writer``). Reads run on the calling thread, each thread with its own read
connection: a point read costs less than a hop to a worker thread. Several processes may share
the files: SQLite's lock serialises their writers (with a busy timeout), and an idle
subscriber notices another process's appends by polling the head every few milliseconds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from cqrskit._sqlite import ReadConnections, connect, migrate, translated, unavailable
from cqrskit._sqlite_writer import AppendRequest, GroupWriter, Outcome
from cqrskit.errors import ConfigurationError
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.sqlite_readmodel import SqliteReadStore
from cqrskit.store import AppendResult, Backend, IdempotencyRecord, IdempotentResult, follow

__all__ = ["SqliteEventStore", "SqliteReadStore", "open_backend"]

POLL_INTERVAL = 0.025  # how often an idle subscriber looks for appends made by other processes
# Small pages: a group commit dirties one leaf of the stream index per stream it touches,
# scattered over the file, and every dirty page is written (and fsynced) whole to the WAL.
# 1 KiB pages make each durable group commit write a quarter of the bytes of 4 KiB pages.
EVENT_PAGE_SIZE = 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_EVENTS_SCHEMA = (
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
)
# Each migration is a tuple of statements; the schema version is the number applied.
_EVENTS_MIGRATIONS: tuple[tuple[str, ...], ...] = (_EVENTS_SCHEMA,)

_COLUMNS = (
    "position, stream_id, stream_version, event_id, event_type, schema_version, data, "
    "metadata, recorded_at"
)
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_VERSION = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
_READ_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_READ_STREAM = (
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? "
    "ORDER BY stream_version LIMIT ?"
)
_FIND_KEY = (
    "SELECT key, fingerprint, stream_id, version, position FROM idempotency_keys WHERE key = ?"
)


# --- the event store ---------------------------------------------------------------------------


class _Wakeup:
    """Wakes the subscribers of one event loop when an append commits (fired on that loop)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()


def _settle(
    results: Sequence[tuple[asyncio.Future[AppendResult], Outcome]], wakeup: _Wakeup | None
) -> None:
    for future, outcome in results:
        if future.done():  # the caller was cancelled; the append happened (or not) regardless
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if wakeup is not None:
        wakeup.fire()


def _encode(event: NewEvent) -> tuple[bytes, str, int, bytes, bytes, int]:
    recorded_at = event.recorded_at
    if recorded_at.tzinfo is None:
        raise ValueError(f"event {event.event_id}: recorded_at must be timezone-aware")
    micros = (recorded_at - _EPOCH) // _MICROSECOND
    return (
        event.event_id.bytes,
        event.event_type,
        event.schema_version,
        event.data,
        event.metadata,
        micros,
    )


def _recorded(rows: list[Any]) -> list[RecordedEvent]:
    epoch, micro, uuid = _EPOCH, _MICROSECOND, UUID
    return [
        RecordedEvent(
            event_id=uuid(bytes=event_id),
            stream_id=stream_id,
            stream_version=version,
            position=position,
            recorded_at=epoch + micro * micros,
            event_type=event_type,
            schema_version=schema_version,
            data=data,
            metadata=metadata,
        )
        for (
            position,
            stream_id,
            version,
            event_id,
            event_type,
            schema_version,
            data,
            metadata,
            micros,
        ) in rows
    ]


class SqliteEventStore:
    """An :class:`~cqrskit.EventStore` in one SQLite file (see the module docstring).

    Open it with :meth:`open`; close it with :meth:`close`. An append whose caller is
    cancelled may still commit, as with any database.
    """

    def __init__(self, path: Path, writer: sqlite3.Connection, synchronous: str) -> None:
        self.path = path
        self._readers = ReadConnections(path, synchronous)
        self._wakeups: dict[asyncio.AbstractEventLoop, _Wakeup] = {}
        self._wakeups_lock = threading.Lock()
        self._closed = False
        self._writer = GroupWriter(path, writer, self._deliver)

    @classmethod
    async def open(
        cls, path: str | Path, *, risk_recent_commits_on_power_loss: bool = False
    ) -> SqliteEventStore:
        """Open (creating if needed) the event store in the file ``path``.

        Raises :class:`StoreUnavailable` when the file cannot be opened or is not a database.
        """
        path = Path(path)
        synchronous = "NORMAL" if risk_recent_commits_on_power_loss else "FULL"

        def prepare() -> sqlite3.Connection:
            writer = connect(path, synchronous=synchronous, writer=True, page_size=EVENT_PAGE_SIZE)
            try:
                migrate(writer, path, "events", _EVENTS_MIGRATIONS)
            except BaseException:
                writer.close()
                raise
            return writer

        return cls(path, await asyncio.to_thread(prepare), synchronous)

    # -- appending --

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        if expected_version is not None and expected_version < 0:
            raise ValueError(f"expected_version must be >= 0 or None, not {expected_version}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        rows = [_encode(event) for event in events]
        self._writer.submit(
            AppendRequest(stream_id, rows, expected_version, idempotency, future, loop)
        )
        return await future

    def _deliver(self, batch: list[AppendRequest], outcomes: list[Outcome]) -> None:
        """Resolve each append's future on its own loop; wake that loop's subscribers."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[AppendResult], Outcome]]]
        by_loop = {}
        for request, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
        committed = any(isinstance(outcome, AppendResult) for outcome in outcomes)
        with self._wakeups_lock:
            wakeups = dict(self._wakeups) if committed else {}
        for loop in by_loop.keys() | wakeups.keys():
            try:
                loop.call_soon_threadsafe(_settle, by_loop.get(loop, ()), wakeups.get(loop))
            except RuntimeError:  # that loop is closed: nobody can be waiting on it
                with self._wakeups_lock:
                    self._wakeups.pop(loop, None)

    # -- reading --

    def _query(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        with translated(self.path, "reading"):
            return self._readers.get().execute(sql, parameters).fetchall()

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        limit = -1 if limit is None else limit
        return _recorded(self._query(_READ_STREAM, (stream_id, from_version, limit)))

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        # Positions are assigned under SQLite's write lock and become visible at commit, in
        # order: a reader can never see a position before a smaller one that commits later.
        return _recorded(self._query(_READ_ALL, (after, limit)))

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        return follow(self.read_all, self._wait_for_append, after, batch_size)

    async def _wait_for_append(self, position: int) -> None:
        wakeup = self._wakeup_for(asyncio.get_running_loop())
        while True:
            event = wakeup.event  # taken before the check, so no append slips in between
            if self._query(_HEAD, ())[0][0] > position:
                return
            try:
                # Appends made in this process set the event at once; the timeout is for
                # appends made by other processes, which only the file can tell us about.
                async with asyncio.timeout(POLL_INTERVAL):
                    await event.wait()
            except TimeoutError:
                continue
            return

    def _wakeup_for(self, loop: asyncio.AbstractEventLoop) -> _Wakeup:
        wakeup = self._wakeups.get(loop)
        if wakeup is None:
            with self._wakeups_lock:
                wakeup = self._wakeups.setdefault(loop, _Wakeup())
        return wakeup

    async def stream_version(self, stream_id: str) -> int:
        version: int = self._query(_VERSION, (stream_id,))[0][0]
        return version

    async def head_position(self) -> int:
        head: int = self._query(_HEAD, ())[0][0]
        return head

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        rows = self._query(_FIND_KEY, (key,))
        if not rows:
            return None
        key, fingerprint, stream_id, version, position = rows[0]
        return IdempotentResult(
            key=key,
            fingerprint=fingerprint,
            stream_id=stream_id,
            version=version,
            position=position,
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.stop)  # appends queued before are still written
        self._readers.close()


# --- opening a backend by URL ------------------------------------------------------------------

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


def read_model_path(path: Path) -> Path:
    """The read-model file that goes with the event store file ``path``."""
    return path.with_name(f"{path.stem}.read{path.suffix}")


async def open_backend(url: str) -> Backend:
    """The SQLite backend for ``sqlite:///path/to/file.db`` (see the module docstring).

    Creates the file, its parent directories and the schema if needed. Raises
    :class:`ConfigurationError` for a malformed URL and :class:`StoreUnavailable` when the
    files cannot be created or opened.
    """
    path, risky = parse_url(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unavailable(path, "creating its directory", error) from error
    events = await SqliteEventStore.open(path, risk_recent_commits_on_power_loss=risky)
    try:
        read = await SqliteReadStore.open(
            read_model_path(path), risk_recent_commits_on_power_loss=risky
        )
    except BaseException:
        await events.close()
        raise
    return Backend(url, events, read)
