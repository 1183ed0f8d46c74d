"""The SQLite event store's writer thread: group commit of concurrent appends.

Private to the SQLite adapter (``cqrskit.sqlite``). One thread owns the write connection.
Appends queue up while the previous transaction is being fsynced; the thread then writes all
of them in one transaction, each with its own version and idempotency checks, so one refused
append never affects the others and one fsync acknowledges them all.

After each transaction the thread settles every append's future on the event loop that awaits
it and wakes that loop's subscribers (:meth:`GroupCommit.next_commit`), so an append made in
this process reaches a waiting subscriber at once.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cqrskit.errors import (
    ConcurrencyError,
    CqrsKitError,
    DuplicateIdempotencyKey,
    StoreUnavailable,
)
from cqrskit.messages import NewEvent
from cqrskit.sqlite._common import (
    EPOCH,
    EVENT_COLUMNS,
    HEAD_SQL,
    MICROSECOND,
    STREAM_VERSION_SQL,
    closed,
    is_unavailable,
    rollback,
    unavailable,
)
from cqrskit.store import AppendResult, IdempotencyRecord

MAX_GROUP = 512  # appends per transaction
Row = tuple[Any, ...]  # an events row without its position, stream id and version

_INSERT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_KEY_EXISTS = "SELECT 1 FROM idempotency_keys WHERE key = ?"
_INSERT_KEY = (
    "INSERT INTO idempotency_keys (key, fingerprint, stream_id, version, position) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _versions_sql(streams: int) -> str:
    """The current version of each of ``streams`` stream ids (streams without events: no row)."""
    marks = ", ".join("?" * streams)
    return (
        "SELECT stream_id, max(stream_version) FROM events "
        f"WHERE stream_id IN ({marks}) GROUP BY stream_id"
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
_Settlement = tuple[asyncio.Future[AppendResult], Outcome]
_STOP = object()


def _encode(event: NewEvent) -> Row:
    recorded_at = event.recorded_at
    if recorded_at.tzinfo is None:
        raise ValueError(f"event {event.event_id}: recorded_at must be timezone-aware")
    micros = (recorded_at - EPOCH) // MICROSECOND
    return (
        event.event_id.bytes,
        event.event_type,
        event.schema_version,
        event.data,
        event.metadata,
        micros,
    )


class _Wakeup:
    """Wakes the subscribers of one event loop when an append commits (fired on that loop)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()


def _settle(settlements: Sequence[_Settlement], wakeup: _Wakeup | None) -> None:
    """Resolve futures and wake subscribers; runs on the loop they belong to."""
    for future, outcome in settlements:
        if future.done():  # the caller was cancelled; the append happened (or not) regardless
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if wakeup is not None:
        wakeup.fire()


class GroupCommit:
    """Owns the write connection and a thread that commits queued appends in groups.

    Start it with the file's write connection; :meth:`close` writes what is queued, then stops
    the thread and closes the connection.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self._path = path
        self._connection = connection
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopped = False
        self._lock = threading.Lock()  # orders submissions against the thread's end
        self._wakeups: dict[asyncio.AbstractEventLoop, _Wakeup] = {}
        self._wakeups_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"cqrskit-sqlite-writer:{path.name}", daemon=True
        )
        self._thread.start()

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        idempotency: IdempotencyRecord | None,
    ) -> AppendResult:
        """Queue one append and wait for its outcome (an :class:`AppendResult` or an error).

        Raises :class:`StoreUnavailable` if the writer has stopped.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        rows = [_encode(event) for event in events]
        request = AppendRequest(stream_id, rows, expected_version, idempotency, future, loop)
        with self._lock:
            if self._stopped:
                raise closed(self._path)
            self._queue.put(request)
        return await future

    def next_commit(self) -> asyncio.Event:
        """The event the next commit of an append in this process sets, on the running loop.

        Take it before looking for new events, so that no commit slips in between.
        """
        loop = asyncio.get_running_loop()
        wakeup = self._wakeups.get(loop)
        if wakeup is None:
            with self._wakeups_lock:
                wakeup = self._wakeups.setdefault(loop, _Wakeup())
        return wakeup.event

    async def close(self) -> None:
        """Write what is queued, then stop the thread and close the connection."""
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        with self._lock:
            if not self._stopped:
                self._queue.put(_STOP)
        self._thread.join()

    def _deliver(self, batch: list[AppendRequest], outcomes: list[Outcome]) -> None:
        """Resolve each append's future on its own loop; wake the loops' subscribers if any
        append committed. Runs on the writer thread."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
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

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._next_group()
                if batch:
                    self._commit_and_deliver(batch)
                if stop:
                    return
        finally:
            # Whatever ended the thread, no append may be left waiting for an answer.
            with self._lock:
                self._stopped = True
            self._fail_pending()
            self._connection.close()

    def _commit_and_deliver(self, batch: list[AppendRequest]) -> None:
        try:
            outcomes = self._commit(batch)
        except BaseException as error:  # a bug: fail this group, then let the thread end
            self._deliver(batch, [StoreUnavailable(f"append failed: {error!r}") for _ in batch])
            raise
        self._deliver(batch, outcomes)

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
                self._deliver([item], [closed(self._path)])

    def _commit(self, batch: list[AppendRequest]) -> list[Outcome]:
        """Write ``batch`` in one transaction; one outcome per append, in order.

        The fast path writes the appends without savepoints. An integrity error (an event id
        stored twice: rare, since ids are time-ordered UUIDs unless the caller chose them)
        rolls the group back and writes it again with a savepoint per append, so only the
        offending append is refused.
        """
        try:
            try:
                return self._write_group(batch, careful=False)
            except sqlite3.IntegrityError:
                return self._write_group(batch, careful=True)
        except Exception as error:
            if isinstance(error, sqlite3.Error) and is_unavailable(error):
                return [unavailable(self._path, "append", error) for _ in batch]
            return [StoreUnavailable(f"append failed: {error!r}") for _ in batch]

    def _write_group(self, batch: list[AppendRequest], *, careful: bool) -> list[Outcome]:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            head: int = connection.execute(HEAD_SQL).fetchone()[0]
            if careful:
                outcomes: list[Outcome] = []
                for request in batch:
                    head, outcome = _write_one(connection, request, head, careful=True)
                    outcomes.append(outcome)
            else:
                outcomes = _write_together(connection, batch, head)
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        return outcomes


def _write_together(
    connection: sqlite3.Connection, batch: list[AppendRequest], head: int
) -> list[Outcome]:
    """Check and write a group of appends with one statement each for the streams' versions,
    the events and the idempotency keys (not one per append): the appends are checked in
    order against the versions as the earlier appends of the group leave them.

    An integrity error (an event id stored twice) fails the whole group; the caller writes it
    again, carefully (:func:`_write_one`).
    """
    streams = list({request.stream_id: None for request in batch})
    versions: dict[str, int] = dict(
        connection.execute(_versions_sql(len(streams)), streams).fetchall()
    )
    events: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    keys_taken: set[str] = set()
    outcomes: list[Outcome] = []
    for request in batch:
        stream_id, expected, key = request.stream_id, request.expected, request.idempotency
        version = versions.get(stream_id, 0)
        if expected is not None and expected != version:
            outcomes.append(ConcurrencyError(stream_id, expected, version))
            continue
        if key is not None and (
            key.key in keys_taken or connection.execute(_KEY_EXISTS, (key.key,)).fetchone()
        ):
            outcomes.append(DuplicateIdempotencyKey(key.key))
            continue
        rows = request.rows
        if rows:
            events.extend(
                (head + offset, stream_id, version + offset, *row)
                for offset, row in enumerate(rows, start=1)
            )
            version += len(rows)
            head += len(rows)
            versions[stream_id] = version
            if key is not None:
                keys.append((key.key, key.fingerprint, stream_id, version, head))
                keys_taken.add(key.key)
        outcomes.append(AppendResult(stream_id=stream_id, version=version, position=head))
    if events:
        connection.executemany(_INSERT, events)
    if keys:
        connection.executemany(_INSERT_KEY, keys)
    return outcomes


def _write_one(
    connection: sqlite3.Connection, request: AppendRequest, head: int, *, careful: bool
) -> tuple[int, Outcome]:
    """Check and write one append; return the new head and the append's outcome.

    The write lock is held, so the version read here cannot change before the insert. When
    ``careful``, the inserts run in a savepoint: a failure half-way (an event id already
    stored) undoes this append only, and the other appends of the group still commit.
    """
    stream_id, expected, key = request.stream_id, request.expected, request.idempotency
    version: int = connection.execute(STREAM_VERSION_SQL, (stream_id,)).fetchone()[0]
    if expected is not None and expected != version:
        return head, ConcurrencyError(stream_id, expected, version)
    if key is not None and connection.execute(_KEY_EXISTS, (key.key,)).fetchone():
        return head, DuplicateIdempotencyKey(key.key)
    rows = request.rows
    if not rows:
        return head, AppendResult(stream_id=stream_id, version=version, position=head)
    if careful:
        connection.execute("SAVEPOINT append")
    try:
        if len(rows) == 1:
            connection.execute(_INSERT, (head + 1, stream_id, version + 1, *rows[0]))
        else:
            connection.executemany(
                _INSERT,
                [
                    (head + offset, stream_id, version + offset, *row)
                    for offset, row in enumerate(rows, start=1)
                ],
            )
        version += len(rows)
        position = head + len(rows)
        if key is not None:
            connection.execute(
                _INSERT_KEY, (key.key, key.fingerprint, stream_id, version, position)
            )
    except sqlite3.IntegrityError as error:
        if not careful:
            raise
        connection.execute("ROLLBACK TO append")
        connection.execute("RELEASE append")
        return head, CqrsKitError(f"append to stream {stream_id!r} refused: {error}")
    if careful:
        connection.execute("RELEASE append")
    return position, AppendResult(stream_id=stream_id, version=version, position=position)
