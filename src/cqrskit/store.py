"""The event store port: the handful of operations every backend provides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.readmodel import ReadStore
from cqrskit.snapshots import SnapshotStore

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "AppendResult",
    "Backend",
    "EventSource",
    "EventStore",
    "IdempotencyRecord",
    "IdempotentResult",
    "follow",
]

#: ``expected_version`` for an append that creates a stream: the stream must not exist yet.
NO_STREAM = 0
#: ``expected_version`` for an append that skips the version check.
ANY_VERSION = None


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append did: the stream's new version and the last event's global position."""

    stream_id: str
    version: int
    position: int


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An idempotency key stored in the same transaction as an append's events.

    ``fingerprint`` identifies the request the key was first used with (for example a hash of
    its body), so that the same key with another request can be refused.
    """

    key: str
    fingerprint: str


class IdempotentResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of the append that first used an idempotency key."""

    key: str
    fingerprint: str
    stream_id: str
    version: int
    position: int


class EventSource(Protocol):
    """Where a :class:`~cqrskit.ProjectionRunner` reads events from, in global order.

    Every :class:`EventStore` is one; so is a log fed from it (``cqrskit.nats.JetStreamSource``
    reads JetStream). Positions are the event store's.
    """

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a position greater than ``after``, in order."""
        ...

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events after ``after``: the history, then new events; never ends."""
        ...

    async def head_position(self) -> int:
        """The position of the last event :meth:`read_all` can return now (0 if none)."""
        ...


class EventStore(Protocol):
    """Durable, append-only storage of event streams with a global order.

    Versions count from 1 within a stream (0 means "no events"). Global positions increase
    strictly in the order :meth:`read_all` returns events and are never reused.
    """

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        """Append ``events`` atomically: all of them or none.

        ``expected_version`` is the version the stream must be at (``NO_STREAM`` for a new
        stream) or ``ANY_VERSION`` for no check. Raises :class:`ConcurrencyError` on a mismatch
        and :class:`DuplicateIdempotencyKey` when ``idempotency.key`` was used before; in both
        cases nothing is written.
        """
        ...

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The events of one stream from ``from_version`` on, in version order."""
        ...

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events with a global position greater than ``after``, in order.

        Only events that can no longer be preceded by another commit are returned, so a reader
        that moves its position forward never skips an event.
        """
        ...

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events after ``after``: first the history, then new events as they come.

        Waits for new appends without polling in a tight loop. Never ends on its own.
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The current version of a stream (0 if it has no events)."""
        ...

    async def head_position(self) -> int:
        """The position of the last event :meth:`read_all` can return now (0 if none)."""
        ...

    async def written_position(self) -> int:
        """The position of the newest committed event, whether :meth:`read_all` can return it
        yet or not (0 if none): at or past :meth:`head_position`, and past it on PostgreSQL
        while an older transaction elsewhere in the cluster is open. No append of this store
        was ever acknowledged with a position beyond it: a consistency token beyond it is not
        one of this store's."""
        ...

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        """The stored outcome of the append that used idempotency ``key``, if any."""
        ...

    async def store_id(self) -> str:
        """The store's identity: made when the store was created, never changed. A read model
        records the identity of the store it was built from (:meth:`ReadStore.source`)."""
        ...

    async def close(self) -> None:
        """Release connections and threads. The store cannot be used afterwards."""
        ...


@dataclass
class Backend:
    """An event store, the read store and the snapshot store that go with it, opened and
    closed together.

    Open one by URL with :func:`cqrskit.backends.open_backend`.
    """

    url: str
    events: EventStore
    read: ReadStore
    #: where snapshots go (None: a backend that keeps none; deciders then load from events)
    snapshots: SnapshotStore | None = None

    async def close(self) -> None:
        """Close the snapshot store, the read store, then the event store."""
        if self.snapshots is not None:
            await self.snapshots.close()
        await self.read.close()
        await self.events.close()


async def follow(
    read_all: Callable[[int, int], Awaitable[list[RecordedEvent]]],
    wait_for_append: Callable[[int], Awaitable[None]],
    after: int,
    batch_size: int,
) -> AsyncIterator[list[RecordedEvent]]:
    """Catch up from ``after`` in batches, then wait for appends and follow them.

    ``wait_for_append(position)`` returns once events after ``position`` may exist (it may
    return early; a spurious wake-up costs one empty read).
    """
    position = after
    while True:
        batch = await read_all(position, batch_size)
        if batch:
            position = batch[-1].position
            yield batch
            if len(batch) == batch_size:
                continue
        await wait_for_append(position)
