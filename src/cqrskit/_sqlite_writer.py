"""The SQLite event store's writer thread: group commit of concurrent appends.

Private to the SQLite adapter (``cqrskit.sqlite``). One thread owns the write connection.
Appends queue up while the previous transaction is being fsynced; the thread then writes all
of them in one transaction, each with its own version and idempotency checks, so one refused
append never affects the others and one fsync acknowledges them all.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cqrskit._sqlite import is_unavailable, rollback, unavailable
from cqrskit.errors import (
    ConcurrencyError,
    CqrsKitError,
    DuplicateIdempotencyKey,
    StoreUnavailable,
)
from cqrskit.store import AppendResult, IdempotencyRecord

MAX_GROUP = 512  # appends per transaction
Row = tuple[Any, ...]  # an events row without its position, stream id and version

_COLUMNS = (
    "position, stream_id, stream_version, event_id, event_type, schema_version, data, "
    "metadata, recorded_at"
)
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Multi-row INSERTs of fixed sizes (so their prepared statements are cached): one statement
# per chunk instead of one step per row keeps the writer from queueing for the GIL per row.
_CHUNKS = (64, 16, 4, 1)  # 64 rows x 9 columns stays under SQLite's oldest variable limit
_INSERT_CHUNK = {
    size: f"INSERT INTO events ({_COLUMNS}) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * size)
    for size in _CHUNKS
}
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_VERSION = "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = ?"
_VERSIONS = "SELECT stream_id, max(stream_version) FROM events WHERE stream_id IN ({}) GROUP BY 1"
_KEY_EXISTS = "SELECT 1 FROM idempotency_keys WHERE key = ?"
_KEYS_TAKEN = "SELECT key FROM idempotency_keys WHERE key IN ({})"
_INSERT_KEY = (
    "INSERT INTO idempotency_keys (key, fingerprint, stream_id, version, position) "
    "VALUES (?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class AppendRequest:
    """One append waiting for the writer thread, and where to report its outcome."""

    stream_id: str
    rows: list[Row]
    expected: int | None
    idempotency: IdempotencyRecord | None
    future: asyncio.Future[AppendResult]
    loop: asyncio.AbstractEventLoop


Outcome = AppendResult | BaseException
Deliver = Callable[[list[AppendRequest], list[Outcome]], None]
_STOP = object()


class GroupWriter:
    """Owns the write connection and a thread that commits queued appends in groups.

    ``deliver(requests, outcomes)`` is called on the writer thread after each transaction
    (outcomes in request order: an :class:`AppendResult` or the exception to raise).
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, deliver: Deliver) -> None:
        self._path = path
        self._connection = connection
        self._deliver = deliver
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"cqrskit-sqlite-writer:{path.name}", daemon=True
        )
        self._thread.start()

    def submit(self, request: AppendRequest) -> None:
        self._queue.put(request)

    def stop(self) -> None:
        """Write what is queued, then stop the thread and close the connection (blocks)."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._next_group()
                if batch:
                    self._deliver(batch, self._commit(batch))
                if stop:
                    return
        finally:
            self._fail_pending()
            self._connection.close()

    def _next_group(self) -> tuple[list[AppendRequest], bool]:
        """Wait for an append, then take every append queued behind it (up to MAX_GROUP)."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < MAX_GROUP:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                closed = StoreUnavailable(f"SQLite database {self._path}: the store is closed")
                self._deliver([item], [closed])

    def _commit(self, batch: list[AppendRequest]) -> list[Outcome]:
        """Write ``batch`` in one transaction; one outcome per append, in order."""
        try:
            try:
                return self._transaction(batch, self._write_group)
            except sqlite3.IntegrityError:
                # An event id that is already stored. Redo the group one append at a time,
                # each in a savepoint, so that only the offending append fails.
                return self._transaction(batch, self._write_one_by_one)
        except Exception as error:
            if isinstance(error, sqlite3.Error) and is_unavailable(error):
                return [unavailable(self._path, "append", error) for _ in batch]
            return [StoreUnavailable(f"append failed: {error!r}") for _ in batch]

    def _transaction(
        self,
        batch: list[AppendRequest],
        write: Callable[[sqlite3.Connection, list[AppendRequest]], list[Outcome]],
    ) -> list[Outcome]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            outcomes = write(connection, batch)
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        return outcomes

    def _write_group(
        self, connection: sqlite3.Connection, batch: list[AppendRequest]
    ) -> list[Outcome]:
        """Check every append against the state read once for the whole group, then insert
        all accepted events together. The write lock is held, so nothing changes meanwhile."""
        head: int = connection.execute(_HEAD).fetchone()[0]
        versions = _current_versions(connection, {request.stream_id for request in batch})
        taken = _taken_keys(connection, [r.idempotency.key for r in batch if r.idempotency])
        rows: list[Row] = []
        key_rows: list[Row] = []
        outcomes: list[Outcome] = []
        for request in batch:
            stream_id, expected, key = request.stream_id, request.expected, request.idempotency
            version = versions.get(stream_id, 0)
            if expected is not None and expected != version:
                outcomes.append(ConcurrencyError(stream_id, expected, version))
                continue
            if key is not None and key.key in taken:
                outcomes.append(DuplicateIdempotencyKey(key.key))
                continue
            for offset, row in enumerate(request.rows, start=1):
                rows.append((head + offset, stream_id, version + offset, *row))
            if request.rows:
                version += len(request.rows)
                head += len(request.rows)
                versions[stream_id] = version
                if key is not None:
                    taken.add(key.key)
                    key_rows.append((key.key, key.fingerprint, stream_id, version, head))
            outcomes.append(AppendResult(stream_id=stream_id, version=version, position=head))
        _insert_events(connection, rows)
        if key_rows:
            connection.executemany(_INSERT_KEY, key_rows)
        return outcomes

    def _write_one_by_one(
        self, connection: sqlite3.Connection, batch: list[AppendRequest]
    ) -> list[Outcome]:
        head: int = connection.execute(_HEAD).fetchone()[0]
        outcomes: list[Outcome] = []
        for request in batch:
            head, outcome = _write_one(connection, request, head)
            outcomes.append(outcome)
        return outcomes


def _current_versions(connection: sqlite3.Connection, streams: set[str]) -> dict[str, int]:
    if len(streams) == 1:
        (stream_id,) = streams
        return {stream_id: connection.execute(_VERSION, (stream_id,)).fetchone()[0]}
    sql = _VERSIONS.format(", ".join(["?"] * len(streams)))
    return dict(connection.execute(sql, tuple(streams)).fetchall())


def _taken_keys(connection: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    sql = _KEYS_TAKEN.format(", ".join(["?"] * len(keys)))
    return {key for (key,) in connection.execute(sql, tuple(keys)).fetchall()}


def _insert_events(connection: sqlite3.Connection, rows: list[Row]) -> None:
    start = 0
    for size in _CHUNKS:
        sql = _INSERT_CHUNK[size]
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            connection.execute(sql, [value for row in chunk for value in row])
            start += size


def _write_one(
    connection: sqlite3.Connection, request: AppendRequest, head: int
) -> tuple[int, Outcome]:
    """Check and write one append in its own savepoint; return the new head and the outcome."""
    stream_id, expected, key = request.stream_id, request.expected, request.idempotency
    version: int = connection.execute(_VERSION, (stream_id,)).fetchone()[0]
    if expected is not None and expected != version:
        return head, ConcurrencyError(stream_id, expected, version)
    if key is not None and connection.execute(_KEY_EXISTS, (key.key,)).fetchone():
        return head, DuplicateIdempotencyKey(key.key)
    if not request.rows:
        return head, AppendResult(stream_id=stream_id, version=version, position=head)
    connection.execute("SAVEPOINT append")
    try:
        connection.executemany(
            _INSERT,
            [
                (head + offset, stream_id, version + offset, *row)
                for offset, row in enumerate(request.rows, start=1)
            ],
        )
        version += len(request.rows)
        position = head + len(request.rows)
        if key is not None:
            connection.execute(
                _INSERT_KEY, (key.key, key.fingerprint, stream_id, version, position)
            )
    except sqlite3.IntegrityError as error:
        connection.execute("ROLLBACK TO append")
        connection.execute("RELEASE append")
        return head, CqrsKitError(f"append to stream {stream_id!r} refused: {error}")
    connection.execute("RELEASE append")
    return position, AppendResult(stream_id=stream_id, version=version, position=position)
