"""The relay: the event store is the outbox, and the relay publishes it to JetStream.

It follows the event store's global order and publishes every event, in that order, to the
JetStream stream (see :mod:`cqrskit.nats._wire` for the message format). Guarantees:

- **No skip, no reorder.** Each publish expects the stream's last sequence to be the previous
  message's (``Nats-Expected-Last-Sequence``), so JetStream stores the events in the log's order
  or refuses them; after a refusal, a timeout or a reconnection the relay starts again from
  what the stream actually holds.
- **Resume from what JetStream has.** On start (and after every error) the relay reads the
  stream's last message and continues after its position. Its checkpoint in the read store
  (moved only after JetStream acknowledged, compare-and-set like a projection's) is where it
  resumes when the stream is empty (new, or purged on purpose).
- **Duplicates are harmless.** A publish that JetStream stored but whose acknowledgment was lost
  is never sent again (the relay resumes after the stream's last message); if it were (two
  relays racing), its ``Nats-Msg-Id`` (the event id) makes JetStream drop it, and the expected
  sequence refuses it.
- **One active relay.** On a read store with leases (PostgreSQL) the relay holds the lease
  ``relay:<stream>``; a standby waits for it and takes over within about a second of the active
  one dying. Correctness does not rest on the lease: two active relays could not interleave
  (expected sequences), they would only waste work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cqrskit import tracing
from cqrskit.errors import CheckpointMoved, StoreUnavailable
from cqrskit.messages import RecordedEvent
from cqrskit.nats import _wire
from cqrskit.nats._log import JetStreamLog, PublishRefused
from cqrskit.partitions import partition_of
from cqrskit.projections import LeasingReadStore
from cqrskit.readmodel import ReadStore, ViewTransaction
from cqrskit.store import EventStore

log = logging.getLogger("cqrskit.nats.relay")

#: seconds between attempts while NATS or the database is unreachable (doubling up to 5 s)
_FIRST_RETRY = 0.1
_LAST_RETRY = 5.0


@dataclass
class RelayStatus:
    """Where the relay stands: the last event JetStream acknowledged (position and stream
    sequence), events published since start, and whether it is the active relay."""

    name: str
    position: int = 0
    sequence: int = 0
    published: int = 0
    active: bool = False
    error: str | None = None


class Relay:
    """Publishes the event store's global log to a JetStream stream (see the module docs)."""

    def __init__(
        self,
        events: EventStore,
        checkpoints: ReadStore,
        log_: JetStreamLog,
        *,
        batch_size: int = 1000,
        use_lease: bool = True,
    ) -> None:
        self._events = events
        self._checkpoints = checkpoints
        self._log = log_
        self._batch_size = batch_size
        self._use_lease = use_lease
        self.name = f"relay:{log_.stream}"
        self.status = RelayStatus(self.name)
        self._checkpoint = 0
        self._previous = 0
        self._partition_previous: list[int | None] = []
        self._progress = asyncio.Condition()

    async def run(self) -> None:
        """Hold the lease (if the read store grants them), then relay until cancelled,
        retrying with backoff while NATS or the database is unavailable."""
        await self._checkpoints.setup(())
        store = self._checkpoints
        lease: contextlib.AbstractAsyncContextManager[None] = (
            store.acquire_lease(self.name)
            if self._use_lease and isinstance(store, LeasingReadStore)
            else contextlib.nullcontext()
        )
        async with lease:
            self.status.active = True
            log.info("%s: active", self.name)
            try:
                await self._relay_forever()
            finally:
                self.status.active = False

    async def _relay_forever(self) -> None:
        pause = _FIRST_RETRY
        while True:
            try:
                await self._resume()
                async for batch in self._events.subscribe_all(
                    self.status.position, self._batch_size
                ):
                    await self._publish(batch)
                    pause = _FIRST_RETRY
            except (PublishRefused, StoreUnavailable, CheckpointMoved) as error:
                self.status.error = str(error)
                log.warning("%s: %s; resuming in %.1f s", self.name, error, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_RETRY)

    async def catch_up(self) -> None:
        """Publish every event up to the event store's current head, then return."""
        await self._checkpoints.setup(())
        await self._resume()
        head = await self._events.head_position()
        while self.status.position < head:
            batch = await self._events.read_all(self.status.position, self._batch_size)
            if not batch:
                return
            await self._publish(batch)

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until JetStream acknowledged the event at ``position``; False on timeout."""
        deadline = time.monotonic() + timeout
        async with self._progress:
            while self.status.position < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._progress.wait()
        return True

    async def _resume(self) -> None:
        """Continue after the stream's last event, or after the checkpoint if it is empty."""
        self._checkpoint = await self._checkpoints.checkpoint(self.name)
        state = await self._log.state()
        partitions = self._log.partitions
        if state.empty:
            # Nothing to learn from the stream: continue after the checkpoint. Each partition's
            # previous event is known only if nothing was published before.
            self.status.position, self.status.sequence = self._checkpoint, state.last_sequence
            known: int | None = 0 if self._checkpoint == 0 else None
            self._partition_previous = [known] * partitions
            self._previous = self._checkpoint
        else:
            last = await self._log.last_envelope()
            first = await self._log.envelope_at(state.first_sequence)
            assert last is not None
            assert first is not None
            self.status.position, self.status.sequence = last.event.position, last.sequence
            self._previous = last.event.position
            complete = first.previous == 0  # the stream holds the log from its first event
            self._partition_previous = [
                await self._last_in_partition(partition, complete)
                for partition in range(partitions)
            ]
        log.info(
            "%s: resuming after position %d (stream sequence %d, checkpoint %d)",
            self.name, self.status.position, self.status.sequence, self._checkpoint,
        )  # fmt: skip

    async def _last_in_partition(self, partition: int, complete: bool) -> int | None:
        found = await self._log.last_envelope(_wire.partition_subject(self._log.stream, partition))
        if found is not None:
            return found.event.position
        return 0 if complete else None

    async def _publish(self, batch: Sequence[RecordedEvent]) -> None:
        headers, chain = self._headers(batch)
        spans = tracing.open_spans(
            f"relay {self._log.stream}",
            [tracing.trace_context_of(event.meta) for event in batch],
            attributes=[_span_attributes(event) for event in batch] if tracing.enabled() else None,
        )
        for header, context in zip(headers, spans.contexts, strict=True):
            header.update(context)
        try:
            sequence = await self._log.publish(batch, headers, self.status.sequence)
        except BaseException as error:
            spans.end(error)
            raise
        spans.end()
        self._previous, self._partition_previous = chain
        last = batch[-1].position
        await self._checkpoints.apply(self.name, self._checkpoint, last, _no_rows)
        self._checkpoint = last
        self.status.position, self.status.sequence = last, sequence
        self.status.published += len(batch)
        self.status.error = None
        async with self._progress:
            self._progress.notify_all()

    def _headers(
        self, batch: Sequence[RecordedEvent]
    ) -> tuple[list[dict[str, str]], tuple[int, list[int | None]]]:
        """Each event's headers, chaining it to the previous event (globally and in its
        partition), and the chain after the batch (kept once JetStream acknowledged it)."""
        partitions = self._log.partitions
        previous = self._previous
        in_partition = list(self._partition_previous)
        headers = []
        for event in batch:
            partition = partition_of(event.stream_id, partitions)
            headers.append(_wire.headers_for(event, previous, in_partition[partition], {}))
            previous = in_partition[partition] = event.position
        return headers, (previous, in_partition)


def _no_rows(view: ViewTransaction) -> None:
    """The relay's checkpoint has no read-model rows to go with it."""


def _span_attributes(event: RecordedEvent) -> dict[str, str | int]:
    return {
        "cqrskit.event_type": event.event_type,
        "cqrskit.stream_id": event.stream_id,
        "cqrskit.position": event.position,
    }
