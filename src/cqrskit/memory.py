"""In-memory event store and read store: the test twins of the durable backends."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from cqrskit.errors import (
    CheckpointMoved,
    ConcurrencyError,
    DuplicateIdempotencyKey,
    TableMissing,
)
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.readmodel import Key, Row, Table, UnitOfWork, ViewTransaction
from cqrskit.snapshots import Snapshot
from cqrskit.store import AppendResult, IdempotencyRecord, IdempotentResult, follow

__all__ = [
    "InMemoryEventStore",
    "InMemoryReadStore",
    "InMemorySnapshotStore",
    "InMemoryWorkerGroup",
]


class InMemoryEventStore:
    """An :class:`~cqrskit.EventStore` held in process memory. Nothing survives the process."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._idempotency: dict[str, IdempotentResult] = {}
        self._appended = asyncio.Event()
        self._store_id = str(uuid.uuid4())

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        stream = self._streams.get(stream_id, [])
        version = len(stream)
        if expected_version is not None and expected_version != version:
            raise ConcurrencyError(stream_id, expected_version, version)
        if idempotency is not None and idempotency.key in self._idempotency:
            raise DuplicateIdempotencyKey(idempotency.key)
        if not events:
            return AppendResult(stream_id=stream_id, version=version, position=self._head())
        recorded = [
            RecordedEvent(
                event_id=event.event_id,
                stream_id=stream_id,
                stream_version=version + offset,
                position=len(self._events) + offset,
                recorded_at=event.recorded_at,
                event_type=event.event_type,
                schema_version=event.schema_version,
                data=event.data,
                metadata=event.metadata,
            )
            for offset, event in enumerate(events, start=1)
        ]
        self._events.extend(recorded)
        self._streams.setdefault(stream_id, []).extend(recorded)
        result = AppendResult(
            stream_id=stream_id, version=recorded[-1].stream_version, position=self._head()
        )
        if idempotency is not None:
            self._idempotency[idempotency.key] = IdempotentResult(
                key=idempotency.key,
                fingerprint=idempotency.fingerprint,
                stream_id=stream_id,
                version=result.version,
                position=result.position,
            )
        self._appended.set()
        self._appended = asyncio.Event()
        return result

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        stream = self._streams.get(stream_id, [])
        start = max(from_version, 1) - 1
        return stream[start : None if limit is None else start + limit]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._events[after : after + limit]

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        return follow(self.read_all, self._wait_for_append, after, batch_size)

    async def _wait_for_append(self, position: int) -> None:
        if self._head() <= position:
            await self._appended.wait()

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    async def head_position(self) -> int:
        return self._head()

    async def written_position(self) -> int:
        return self._head()

    def _head(self) -> int:
        return len(self._events)

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        return self._idempotency.get(key)

    async def store_id(self) -> str:
        return self._store_id

    async def close(self) -> None:
        return None


class InMemoryReadStore:
    """A :class:`~cqrskit.ReadStore` held in process memory."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[Key, Row]] = {}
        self._checkpoints: dict[str, int] = {}
        self._sources: dict[str, str] = {}
        self._groups: dict[str, dict[str, set[int]]] = {}

    async def setup(self, tables: Sequence[Table]) -> None:
        for table in tables:
            self._tables.setdefault(table.name, {})

    async def checkpoint(self, projection: str) -> int:
        return self._checkpoints.get(projection, 0)

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        actual = self._checkpoints.get(projection, 0)
        if actual != expected:
            raise CheckpointMoved(projection, expected, actual)
        unit = UnitOfWork(self._load)
        write(unit)  # an exception here leaves every table untouched
        changes = [
            (self._rows(table), table, upserts, deletes)
            for table, upserts, deletes in unit.changes()
        ]
        for rows, table, upserts, deletes in changes:
            for row in upserts:
                rows[table.key_of(row)] = copy.deepcopy(row)
            for key in deletes:
                rows.pop(key, None)
        self._checkpoints[projection] = position

    def _rows(self, table: Table) -> dict[Key, Row]:
        rows = self._tables.get(table.name)
        if rows is None:
            raise TableMissing(table.name)
        return rows

    def _load(self, table: Table, key: Key) -> Row | None:
        row = self._rows(table).get(key)
        return copy.deepcopy(row) if row is not None else None

    @contextlib.asynccontextmanager
    async def join_group(self, group: str) -> AsyncIterator[InMemoryWorkerGroup]:
        """Join worker group ``group`` of this store (see :class:`cqrskit.WorkerGroups`)."""
        members = self._groups.setdefault(group, {})
        joined = InMemoryWorkerGroup(members, uuid.uuid4().hex)
        members[joined.member] = set()
        try:
            yield joined
        finally:
            del members[joined.member]

    async def reset(self, projection: str, tables: Sequence[Table]) -> None:
        for table in tables:
            self._tables[table.name] = {}
        self._checkpoints[projection] = 0
        self._sources.pop(projection, None)

    async def group_members(self, group: str) -> list[str]:
        return sorted(self._groups.get(group, {}))

    async def stored_checkpoints(self) -> dict[str, int]:
        return dict(self._checkpoints)

    async def reset_projections(self, projections: Sequence[str], tables: Sequence[Table]) -> None:
        for table in tables:
            if table.name in self._tables:
                self._tables[table.name] = {}
        for projection in projections:
            self._checkpoints.pop(projection, None)
            self._sources.pop(projection, None)

    async def drop(self, projection: str, tables: Sequence[str]) -> None:
        for name in tables:
            self._tables.pop(name, None)
        self._checkpoints.pop(projection, None)
        self._sources.pop(projection, None)

    async def source(self, projection: str) -> str | None:
        return self._sources.get(projection)

    async def record_source(self, projection: str, store_id: str) -> None:
        self._sources[projection] = store_id

    async def get(self, table: Table, *key: Any) -> Row | None:
        return self._load(table, key)

    async def find(
        self,
        table: Table,
        *,
        where: Mapping[str, Any] | None = None,
        order_by: Sequence[str] = (),
        after: Sequence[Any] | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Row]:
        conditions = dict(where or {})
        rows = [
            row
            for row in self._rows(table).values()
            if all(row[name] == value for name, value in conditions.items())
        ]
        if order_by:

            def sort_key(row: Row) -> tuple[Any, ...]:
                return tuple(row[name] for name in order_by)

            rows.sort(key=sort_key, reverse=descending)
            if after is not None:
                bound = tuple(after)
                rows = [
                    row
                    for row in rows
                    if (sort_key(row) < bound if descending else sort_key(row) > bound)
                ]
        return [copy.deepcopy(row) for row in rows[:limit]]

    async def close(self) -> None:
        return None


class InMemoryWorkerGroup:
    """A membership of a worker group of an :class:`InMemoryReadStore` (the in-memory twin of
    the PostgreSQL read store's, for tests: members are in one process)."""

    def __init__(self, members: dict[str, set[int]], member: str) -> None:
        self._members = members
        self._member = member

    @property
    def member(self) -> str:
        return self._member

    async def members(self) -> list[str]:
        return sorted(self._members)

    async def claim(self, partition: int) -> bool:
        if any(partition in held for other, held in self._members.items() if other != self.member):
            return False
        self._members[self.member].add(partition)
        return True

    async def release(self, partition: int) -> None:
        self._members[self.member].discard(partition)


class InMemorySnapshotStore:
    """A :class:`~cqrskit.snapshots.SnapshotStore` held in process memory."""

    def __init__(self) -> None:
        self._snapshots: dict[tuple[str, str, int], Snapshot] = {}

    async def save(self, snapshot: Snapshot) -> None:
        key = (snapshot.stream_id, snapshot.kind, snapshot.state_version)
        stored = self._snapshots.get(key)
        if (
            stored is None
            or stored.stream_version < snapshot.stream_version
            or stored.state_shape != snapshot.state_shape
        ):
            self._snapshots[key] = snapshot

    async def load(self, stream_id: str, kind: str, state_version: int) -> Snapshot | None:
        return self._snapshots.get((stream_id, kind, state_version))

    async def close(self) -> None:
        return None
