"""Subscriptions that see every event in its current shape, however old the stored one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from cqrskit.codec import EventCodec
from cqrskit.messages import RecordedEvent
from cqrskit.store import EventStore

__all__ = ["subscribe"]


async def subscribe(
    store: EventStore, codec: EventCodec, *, after: int = 0, batch_size: int = 1000
) -> AsyncIterator[list[RecordedEvent]]:
    """:meth:`EventStore.subscribe_all` with each event upcast by ``codec``
    (:meth:`EventCodec.upcast`): consumers are written against today's event classes only.

    Never ends on its own. Raises :class:`UnknownEventType` or :class:`UndecodableEvent` at
    an event this release cannot read (resume after it with ``after=`` its position, if
    skipping it is right for the consumer).
    """
    upcast = codec.upcast
    async for batch in store.subscribe_all(after, batch_size):
        yield [upcast(recorded) for recorded in batch]
