"""The SQLite event store: appends through the group-commit writer, reads on the caller's thread.

See :mod:`cqrskit.sqlite` for the files, durability and the several-process story.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from cqrskit.ids import uuid_from_bytes
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.sqlite._common import (
    EPOCH,
    EVENT_COLUMNS,
    HEAD_SQL,
    MICROSECOND,
    STREAM_VERSION_SQL,
    ReadConnections,
)
from cqrskit.sqlite._schema import EVENTS, OpenedFile, open_file
from cqrskit.sqlite._writer import GroupCommit
from cqrskit.store import AppendResult, IdempotencyRecord, IdempotentResult, follow

POLL_INTERVAL = 0.025  # how often an idle subscriber looks for appends made by other processes

_READ_ALL = f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_READ_STREAM = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? "
    "ORDER BY stream_version LIMIT ?"
)
_STORE_ID = "SELECT store_id FROM cqrskit_identity"
_FIND_KEY = (
    "SELECT key, fingerprint, stream_id, version, position FROM idempotency_keys WHERE key = ?"
)


def _recorded(rows: list[Any]) -> list[RecordedEvent]:
    epoch, micro, uuid = EPOCH, MICROSECOND, uuid_from_bytes
    return [
        RecordedEvent(
            event_id=uuid(event_id),
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
    """An :class:`~cqrskit.EventStore` in one SQLite file (see :mod:`cqrskit.sqlite`).

    Open it with :meth:`open`; close it with :meth:`close`. An append whose caller is
    cancelled may still commit, as with any database.
    """

    def __init__(self, file: OpenedFile) -> None:
        self.path = file.path
        self._readers = ReadConnections(file.path, file.synchronous)
        self._closed = False
        self._appends = GroupCommit(file.path, file.writer)
        self._store_id: str | None = None

    @classmethod
    async def open(
        cls, path: str | Path, *, risk_recent_commits_on_power_loss: bool = False
    ) -> SqliteEventStore:
        """Open (creating if needed) the event store in the file ``path``.

        Raises :class:`StoreUnavailable` when the file cannot be opened or is not a database.
        """
        return cls(await open_file(path, EVENTS, risky=risk_recent_commits_on_power_loss))

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
        return await self._appends.append(stream_id, events, expected_version, idempotency)

    # -- reading --

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        limit = -1 if limit is None else limit
        return _recorded(self._readers.fetch_all(_READ_STREAM, (stream_id, from_version, limit)))

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        # Positions are assigned under SQLite's write lock and become visible at commit, in
        # order: a reader can never see a position before a smaller one that commits later.
        return _recorded(self._readers.fetch_all(_READ_ALL, (after, limit)))

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        return follow(self.read_all, self._wait_for_append, after, batch_size)

    async def _wait_for_append(self, position: int) -> None:
        while True:
            committed = self._appends.next_commit()  # before the check: no append slips in
            if self._readers.fetch_all(HEAD_SQL, ())[0][0] > position:
                return
            try:
                # Appends made in this process set the event at once; the timeout is for
                # appends made by other processes, which only the file can tell us about.
                async with asyncio.timeout(POLL_INTERVAL):
                    await committed.wait()
            except TimeoutError:
                continue
            return

    async def stream_version(self, stream_id: str) -> int:
        version: int = self._readers.fetch_all(STREAM_VERSION_SQL, (stream_id,))[0][0]
        return version

    async def head_position(self) -> int:
        head: int = self._readers.fetch_all(HEAD_SQL, ())[0][0]
        return head

    async def written_position(self) -> int:
        return await self.head_position()  # a commit is visible at once

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        rows = self._readers.fetch_all(_FIND_KEY, (key,))
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

    async def store_id(self) -> str:
        if self._store_id is None:
            self._store_id = str(self._readers.fetch_all(_STORE_ID, ())[0][0])
        return self._store_id

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._appends.close()  # appends queued before are still written
        self._readers.close()
