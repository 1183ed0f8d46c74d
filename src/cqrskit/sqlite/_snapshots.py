"""The SQLite snapshot store: the ``snapshots`` table of the event store's file.

Snapshots are written on a connection of their own (in a worker thread), outside the event
store's group commit: a snapshot is taken once every N events and may wait its turn for the
file's write lock; reads run on the calling thread, like the event store's.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from cqrskit.snapshots import Snapshot
from cqrskit.sqlite._common import (
    EPOCH,
    MICROSECOND,
    ReadConnections,
    connect,
    rollback,
    synchronous_mode,
    translated,
)

_SAVE = """
INSERT INTO snapshots
    (stream_id, kind, state_version, state_shape, stream_version, state, taken_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (stream_id, kind, state_version) DO UPDATE SET
    state_shape = excluded.state_shape,
    stream_version = excluded.stream_version,
    state = excluded.state,
    taken_at = excluded.taken_at
WHERE excluded.stream_version > snapshots.stream_version
    OR excluded.state_shape <> snapshots.state_shape
"""
_LOAD = """
SELECT state_shape, stream_version, state, taken_at FROM snapshots
WHERE stream_id = ? AND kind = ? AND state_version = ?
"""


class SqliteSnapshotStore:
    """A :class:`~cqrskit.snapshots.SnapshotStore` in the event store's SQLite file (opened,
    and migrated, by :class:`~cqrskit.sqlite.SqliteEventStore` first)."""

    def __init__(self, path: Path, *, risk_recent_commits_on_power_loss: bool = False) -> None:
        self.path = path
        synchronous = synchronous_mode(risk_recent_commits_on_power_loss)
        self._readers = ReadConnections(path, synchronous)
        self._writer = connect(path, synchronous=synchronous, writer=False)
        self._write_lock = threading.Lock()

    async def save(self, snapshot: Snapshot) -> None:
        if snapshot.taken_at.tzinfo is None:
            raise ValueError("a snapshot's taken_at must be timezone-aware")
        row = (
            snapshot.stream_id,
            snapshot.kind,
            snapshot.state_version,
            snapshot.state_shape,
            snapshot.stream_version,
            snapshot.state,
            (snapshot.taken_at - EPOCH) // MICROSECOND,
        )

        def write() -> None:
            with self._write_lock, translated(self.path, "saving a snapshot"):
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    self._writer.execute(_SAVE, row)
                    self._writer.execute("COMMIT")
                except BaseException:
                    rollback(self._writer)
                    raise

        await asyncio.to_thread(write)

    async def load(self, stream_id: str, kind: str, state_version: int) -> Snapshot | None:
        rows = self._readers.fetch_all(_LOAD, (stream_id, kind, state_version))
        if not rows:
            return None
        shape, stream_version, state, micros = rows[0]
        return Snapshot(
            stream_id=stream_id,
            kind=kind,
            state_version=state_version,
            state_shape=shape,
            stream_version=stream_version,
            state=state,
            taken_at=EPOCH + MICROSECOND * micros,
        )

    async def close(self) -> None:
        def close_writer() -> None:
            with self._write_lock:
                self._writer.close()

        await asyncio.to_thread(close_writer)
        self._readers.close()
