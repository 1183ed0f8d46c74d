"""JetStream as an event source for projection runners, with the event store as history.

:class:`JetStreamSource` gives a :class:`~cqrskit.ProjectionRunner` the events of the log (or
of one partition) in global order, as the event store would, but read from JetStream. Each
message names the event before it (``Cqrskit-Previous``, or ``Cqrskit-Partition-Previous`` for a
partition), so the source always knows whether it has seen everything up to a message:

- a message at or before the last position handed out is a redelivery: dropped;
- a message whose previous is the last position handed out follows on: handed out;
- any other message means events are missing (the stream does not reach back that far, a
  message was lost in a reconnection, the stream was purged): the source reads the missing
  ones from the event store (``history``), hands them out, then the message.

So a brand-new node builds from JetStream when the stream holds the whole log, and from the
event store for whatever the stream's retention no longer holds; no event is skipped or
applied twice (the runner's checkpoint, moved in the same transaction as its writes, is the
position the source resumes after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cqrskit.errors import StoreUnavailable
from cqrskit.messages import RecordedEvent
from cqrskit.nats import _wire
from cqrskit.nats._log import JetStreamLog
from cqrskit.partitions import partition_of
from cqrskit.store import EventStore

log = logging.getLogger("cqrskit.nats.source")

_FIRST_RETRY = 0.1
_READ_DEADLINE = 30.0
_LAST_RETRY = 5.0


class JetStreamSource:
    """The log as JetStream holds it, gaps filled from ``history`` (see the module docs).

    ``consumer`` names the durable consumer that :meth:`subscribe_all` reads with (one per
    node and projection: two sources must not share a name). With ``partition``, only the
    events of that partition (:func:`cqrskit.partitions.partition_of` over the stream's
    partition count) are read.
    """

    def __init__(
        self,
        log_: JetStreamLog,
        history: EventStore,
        *,
        consumer: str,
        partition: int | None = None,
        wait: float = 2.0,
    ) -> None:
        if partition is not None and not 0 <= partition < log_.partitions:
            raise ValueError(f"partition {partition} is not in 0..{log_.partitions - 1}")
        self._log = log_
        self._history = history
        self._consumer = _wire.token(consumer)
        self._partition = partition
        self._wait = wait
        self._filter = (
            _wire.all_subjects(log_.stream)
            if partition is None
            else _wire.partition_subject(log_.stream, partition)
        )

    async def head_position(self) -> int:
        """The position of the newest event in JetStream (of this partition), 0 if none."""
        last = await self._log.last_envelope(self._filter)
        return 0 if last is None else last.event.position

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events after ``after``, in order (an ephemeral consumer's worth)."""
        sequence, _ = await self._log.sequence_after(after)
        last = await self._log.last_envelope(self._filter)
        if last is None or last.sequence < sequence:
            return []
        name = f"{self._consumer}_read_{uuid.uuid4().hex[:8]}"
        subscription = await self._log.pull_consumer(name, self._filter, sequence, durable=False)
        try:
            messages = await self._fetch_through(subscription, last.sequence, limit)
        finally:
            await self._log.drop(subscription, name)
        found: list[RecordedEvent] = []
        async for batch in self._in_order(messages, after, limit):
            found.extend(batch)
            if len(found) >= limit:
                break
        return found[:limit]

    async def _fetch_through(
        self, subscription: JetStreamContext.PullSubscription, last_sequence: int, limit: int
    ) -> list[Msg]:
        """Up to ``limit`` messages, fetched until the one at ``last_sequence`` came.

        A fetch that waits in vain on a busy server is not the end of the log: an empty
        answer would tell a runner it has caught up while events are still stored. So this
        fetches again until the known last message arrived, and gives up only after
        ``_READ_DEADLINE`` seconds, with :class:`StoreUnavailable`.
        """
        messages: list[Msg] = []
        deadline = asyncio.get_running_loop().time() + _READ_DEADLINE
        while len(messages) < limit:
            if messages and messages[-1].metadata.sequence.stream >= last_sequence:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise StoreUnavailable(
                    f"NATS at {self._log.where}: JetStream did not deliver the stored messages "
                    f"up to sequence {last_sequence} within {_READ_DEADLINE:.0f} s"
                )
            messages.extend(await self._log.fetch(subscription, limit - len(messages), timeout=0.5))
        return messages

    async def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches after ``after``, then new events as the relay publishes them; never ends.

        Reads with a durable consumer created anew from ``after``; a batch is acknowledged
        once the caller asks for the next one (it has applied this one). While NATS is away
        the source waits and starts again from the last event it handed out.
        """
        last, pause = after, _FIRST_RETRY
        while True:
            subscription = None
            try:
                sequence, _ = await self._log.sequence_after(last)
                subscription = await self._log.pull_consumer(
                    self._consumer, self._filter, sequence, durable=True,
                    max_ack_pending=batch_size * 4,
                )  # fmt: skip
                while True:
                    messages = await self._log.fetch(subscription, batch_size, self._wait)
                    async for batch in self._in_order(messages, last, batch_size):
                        last = batch[-1].position
                        yield batch
                    if messages:
                        await self._log.ack(messages[-1])
                    pause = _FIRST_RETRY
            except StoreUnavailable as error:
                log.warning("%s: %s; reading again in %.1f s", self._consumer, error, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_RETRY)
            finally:
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()

    async def _in_order(
        self, messages: Sequence[Msg], last: int, batch_size: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        """The events of ``messages`` after ``last``, with any missing ones read from history."""
        ready: list[RecordedEvent] = []
        for message in messages:
            envelope = _wire.envelope_of(
                message.headers, message.data, message.metadata.sequence.stream
            )
            position = envelope.event.position
            if position <= last:
                continue  # a redelivery
            previous = envelope.previous if self._partition is None else envelope.partition_previous
            if previous != last:
                if ready:
                    yield ready
                    ready = []
                async for missing in self._from_history(last, position, batch_size):
                    yield missing
            ready.append(envelope.event)
            last = position
            if len(ready) >= batch_size:
                yield ready
                ready = []
        if ready:
            yield ready

    async def _from_history(
        self, after: int, before: int, batch_size: int
    ) -> AsyncIterator[list[RecordedEvent]]:
        """The events of this source between positions ``after`` and ``before`` (exclusive),
        from the event store."""
        log.info("%s: reading events %d..%d from the event store", self._consumer, after, before)
        position = after
        while position < before:
            events = await self._history.read_all(position, batch_size)
            if not events:
                return
            position = events[-1].position
            wanted = [
                event for event in events if event.position < before and self._includes(event)
            ]
            if wanted:
                yield wanted

    def _includes(self, event: RecordedEvent) -> bool:
        if self._partition is None:
            return True
        return partition_of(event.stream_id, self._log.partitions) == self._partition
