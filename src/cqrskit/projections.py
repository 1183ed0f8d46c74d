"""Projections: event handlers that maintain read-model tables, and the runner that feeds them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from cqrskit import tracing
from cqrskit.codec import EventCodec
from cqrskit.deadletters import (
    DeadLetterTables,
    ErrorPolicy,
    ProjectionHalted,
    _BatchPlan,
    _EventFailed,
    halted_event,
    parked_streams,
)
from cqrskit.errors import CheckpointMoved, ConfigurationError
from cqrskit.messages import Event, RecordedEvent
from cqrskit.readmodel import ReadStore, Table, ViewTransaction
from cqrskit.store import EventSource

__all__ = [
    "Handler",
    "LeasingReadStore",
    "Projection",
    "ProjectionRunner",
    "ProjectionStatus",
]

E = TypeVar("E", bound=Event)
Handler = Callable[[E, RecordedEvent, ViewTransaction], None]
log = logging.getLogger("cqrskit.projections")


class Projection:
    """A named set of read-model tables and the event handlers that fill them.

    Handlers are plain functions ``handler(event, recorded, view)``; they must be
    deterministic in the event and its envelope (use ``recorded.recorded_at``, never the
    clock), so that a rebuild gives the same tables.

    ``tables`` ends with the projection's two dead-letter tables (``dead_letters``, see
    :mod:`cqrskit.deadletters`), so that they are created, reset and dropped with its own.
    """

    def __init__(self, name: str, tables: Sequence[Table]) -> None:
        self.name = name
        self.dead_letters = DeadLetterTables(name)
        self.tables = (*tables, *self.dead_letters.tables)
        self._handlers: dict[str, Handler[Any]] = {}

    def on(self, event_type: type[E]) -> Callable[[Handler[E]], Handler[E]]:
        """Register the decorated function as the handler of ``event_type``."""

        def register(handler: Handler[E]) -> Handler[E]:
            if event_type.event_type in self._handlers:
                raise ConfigurationError(
                    f"projection {self.name!r} handles {event_type.event_type!r} twice"
                )
            self._handlers[event_type.event_type] = handler
            return handler

        return register

    def renamed(self, name: str) -> Projection:
        """The same tables and handlers under another name (another checkpoint), e.g. one
        partition of this projection run by a :class:`cqrskit.PartitionedWorker`."""
        twin = Projection(name, self.tables)
        twin._handlers = self._handlers
        return twin

    def apply(
        self, codec: EventCodec, events: Sequence[RecordedEvent], view: ViewTransaction
    ) -> int:
        """Apply the handled events of ``events`` to ``view``; return how many were handled.

        Events stored in an earlier shape are upcast first (see :class:`EventCodec`).
        """
        return sum(self.apply_event(codec, recorded, view) for recorded in events)

    def handles(self, codec: EventCodec, recorded: RecordedEvent) -> bool:
        """Whether this projection has a handler for ``recorded`` (as read today)."""
        return codec.read_as(recorded.event_type, recorded.schema_version) in self._handlers

    def apply_event(
        self, codec: EventCodec, recorded: RecordedEvent, view: ViewTransaction
    ) -> bool:
        """Apply one event to ``view``; False when this projection does not handle it.

        Raises what its handler raises, or :class:`~cqrskit.UndecodableEvent`."""
        handler = self._handlers.get(codec.read_as(recorded.event_type, recorded.schema_version))
        if handler is None:
            return False
        # Handlers see the event and its envelope in the current shape, however old the
        # stored one: they are written against today's classes only.
        current = codec.upcast(recorded)
        handler(codec.decode(current), current, view)
        return True


@runtime_checkable
class LeasingReadStore(Protocol):
    """A read store that can grant one process at a time the right to run a projection."""

    def acquire_lease(self, projection: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Wait for, then hold, the lease of ``projection`` while the context is open."""
        ...


@dataclass
class ProjectionStatus:
    """Where a projection stands in this process: its checkpoint, the events it applied, and
    what :meth:`ProjectionRunner.run` is doing.

    ``standing_by`` is true while the runner waits for its lease, ``running`` once it holds it
    (or needs none) and follows the log; ``catch_up_target`` is the head of the log when it
    started following: below it, the runner is still catching up.
    """

    name: str
    position: int = 0
    events_applied: int = 0
    running: bool = False
    standing_by: bool = False
    catch_up_target: int = 0


class ProjectionRunner:
    """Feeds one projection from an event source (the event store, or a log fed from it such
    as ``cqrskit.nats.JetStreamSource``), in global order, batch by batch.

    Each batch's read-model writes and the new checkpoint are committed in one transaction, so
    after a crash no event is applied twice or skipped. An event it cannot apply (its handler
    raises, or it cannot be decoded or upcast) meets ``on_error`` (see
    :mod:`cqrskit.deadletters`): ``stop`` (the default) commits the events before it and
    raises :class:`~cqrskit.deadletters.ProjectionHalted`; ``park`` sets it and the later
    events of its stream aside as dead letters, in the batch's transaction, and goes on.

    Several runners of the same projection may run at once (several processes): the
    checkpoint is compare-and-set, and a runner that loses the race rolls its batch back and
    resumes from the winner's checkpoint.
    """

    def __init__(
        self,
        projection: Projection,
        events: EventSource,
        read_store: ReadStore,
        codec: EventCodec,
        *,
        batch_size: int = 1000,
        use_lease: bool = True,
        on_error: ErrorPolicy = ErrorPolicy.STOP,
    ) -> None:
        self.projection = projection
        self.on_error = ErrorPolicy(on_error)
        self._use_lease = use_lease
        #: streams with dead letters, and the position of a recorded halt (None: not halted)
        self._parked: frozenset[str] = frozenset()
        self._halt: tuple[int, int] | None = None
        self._events = events
        self._read_store = read_store
        self._codec = codec
        self._batch_size = batch_size
        self.status = ProjectionStatus(projection.name)
        self._progress = asyncio.Condition()

    async def setup(self) -> None:
        """Create the projection's tables if needed and load its checkpoint."""
        await self._read_store.setup(self.projection.tables)
        await self._load_position()

    async def _load_position(self) -> None:
        """The checkpoint, and what this runner must know of the dead letters."""
        store, tables = self._read_store, self.projection.dead_letters
        self.status.position = await store.checkpoint(self.projection.name)
        self._parked = await parked_streams(store, tables)
        halt = await halted_event(store, tables)
        self._halt = None if halt is None else (halt.position, halt.attempts)

    async def catch_up(self, on_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Apply every event up to the store's current head, then return.

        The next batch is read while the current one is applied (the read-model write runs in
        its own transaction, often on another thread or connection), so reading and writing
        overlap.
        """
        await self._load_position()  # another process may have moved it (a retried halt)
        head = await self._events.head_position()
        events, size = self._events, self._batch_size
        ahead = asyncio.ensure_future(events.read_all(self.status.position, size))
        try:
            while True:
                batch = await ahead
                if not batch:
                    return
                if batch[-1].position < head:
                    ahead = asyncio.ensure_future(events.read_all(batch[-1].position, size))
                await self._apply(batch)
                if on_batch is not None:
                    await on_batch(self.status.position)
                if batch[-1].position >= head:
                    return
        finally:
            ahead.cancel()

    async def run(self, on_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Catch up, then follow new events until cancelled (or until the store fails: the
        error propagates; :class:`cqrskit.supervision.Supervisor` restarts runners).

        On a read store that offers leases (:class:`LeasingReadStore`, e.g. PostgreSQL), the
        runner first takes the projection's lease, so that of several processes running the
        same projection one works and the others stand by, taking over if it dies
        (``use_lease=False`` skips it: the compare-and-set checkpoint alone still keeps
        concurrent runners from applying a batch twice). ``on_batch(events_handled)`` is
        awaited after each committed batch.
        """
        await self._read_store.setup(self.projection.tables)
        store = self._read_store
        leasing = self._use_lease and isinstance(store, LeasingReadStore)
        lease: contextlib.AbstractAsyncContextManager[None] = (
            store.acquire_lease(self.projection.name)
            if leasing and isinstance(store, LeasingReadStore)
            else contextlib.nullcontext()
        )
        self.status.standing_by = leasing
        try:
            async with lease:
                self.status.standing_by = False
                await self._load_position()
                self.status.catch_up_target = await self._events.head_position()
                self.status.running = True
                while True:
                    try:
                        await self._follow(on_batch)
                    except CheckpointMoved as moved:
                        log.info("projection %s: %s; resuming", self.projection.name, moved)
                        await self._load_position()
        finally:
            self.status.standing_by = False
            self.status.running = False

    async def _follow(self, on_batch: Callable[[int], Awaitable[None]] | None) -> None:
        async for batch in self._events.subscribe_all(self.status.position, self._batch_size):
            handled = await self._apply(batch)
            if on_batch is not None:
                await on_batch(handled)

    async def _apply(self, batch: list[RecordedEvent]) -> int:
        projection, store = self.projection, self._read_store
        clear = None if self._halt is None else self._halt[0]
        plan = _BatchPlan(projection, self._codec, batch, self._parked, clear_halt=clear)
        end = batch[-1].position
        started = time.time_ns() if tracing.enabled() else 0
        while True:
            try:
                await store.apply(projection.name, self.status.position, end, plan.write)
                break
            except _EventFailed as failed:  # rolled back: try the batch again without it
                if self.on_error is ErrorPolicy.PARK:
                    plan.failures[failed.index] = failed
                    continue
                plan.stop_at = failed
                if self._halt is not None and self._halt[0] == failed.recorded.position:
                    plan.halt_attempts = self._halt[1] + 1
                end = batch[failed.index - 1].position if failed.index else self.status.position
        if started:
            traced = [tracing.trace_context_of(event.meta) for event in batch]
            tracing.record_spans(
                f"project {projection.name}",
                [context for context in traced if context],
                started,
                attributes={"cqrskit.projection": projection.name},
            )
        self.status.position = end
        self.status.events_applied += plan.handled
        self._parked, self._halt = frozenset(plan.parked_after), None
        async with self._progress:
            self._progress.notify_all()
        if plan.stop_at is not None:
            await self._halted(plan)
        return plan.handled

    async def _halted(self, plan: _BatchPlan) -> None:
        halt = await halted_event(self._read_store, self.projection.dead_letters)
        if halt is None:  # another runner got past it meanwhile: go on
            return
        self._halt = (halt.position, halt.attempts)
        raise ProjectionHalted(halt)

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until this runner's checkpoint reaches ``position``; False on timeout."""
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

    async def rebuild(self, on_batch: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Empty the projection's tables and apply every event again from position 0."""
        await self._read_store.setup(self.projection.tables)
        await self._read_store.reset(self.projection.name, self.projection.tables)
        self.status.position = 0
        self.status.events_applied = 0
        self._parked, self._halt = frozenset(), None
        await self.catch_up(on_batch)
