"""Partitioned projection workers: several processes share the projections of one read model,
each running some partitions of the log (:func:`cqrskit.partitions.partition_of`, by stream id,
so that each stream's events stay in order).

- **Membership and ownership.** Workers join a *group* (:class:`WorkerGroups`, e.g. the
  PostgreSQL read store: a session advisory lock per member and per claimed partition, all on one
  connection, so a worker that dies or loses the database lets go of everything at once).
- **Assignment.** Every worker computes the same assignment from the sorted list of live members
  (:func:`assign_partitions`: round robin), releases the partitions that are no longer its own
  and claims those that are, once their previous owner let go. So the group rebalances within a
  tick or two (``rebalance_every``) of a worker joining, leaving or dying.
- **Per-partition checkpoints.** Each (projection, partition) is a :class:`ProjectionRunner` of
  its own with checkpoint :func:`partition_checkpoint`, compare-and-set in the same transaction
  as its writes: the claim saves work, correctness never rests on it. A partition that moves
  resumes from its checkpoint on the new owner.
- **Exact global aggregates.** Rows every partition updates (totals, daily figures) are written
  with :meth:`~cqrskit.ViewTransaction.increment`: atomic ``column = column + delta`` updates in
  the batch's transaction, so they count each event exactly once, whichever worker applies it.
- **Read-your-writes.** :class:`PartitionedProgress` says when every partition has applied the
  log up to a position (a consistency token), for processes that query the read model.
- **Rebuilding online.** :meth:`PartitionedWorker.reset_read_model` empties the read model and
  forgets every partition checkpoint in one transaction: the running workers find their
  checkpoints moved (:class:`~cqrskit.CheckpointMoved`) and build it again from the start of
  the log, each event applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from cqrskit.codec import EventCodec
from cqrskit.deadletters import DeadLetterTables, ErrorPolicy
from cqrskit.errors import ConfigurationError, StoreUnavailable
from cqrskit.messages import RecordedEvent
from cqrskit.partitions import (
    MAX_PARTITIONS,
    WorkerGroup,
    WorkerGroups,
    partition_checkpoint,
    partition_of,
    stored_partition_checkpoints,
)
from cqrskit.projections import Projection, ProjectionRunner
from cqrskit.readmodel import ReadStore, Table
from cqrskit.store import EventSource, EventStore
from cqrskit.supervision import REBUILD, Backoff, Supervisor

__all__ = [
    "PartitionedProgress",
    "PartitionedWorker",
    "StorePartition",
    "WorkerGroup",
    "WorkerGroups",
    "WorkerStatus",
    "assign_partitions",
    "partition_checkpoint",
    "stored_partition_checkpoints",
]

log = logging.getLogger("cqrskit.workers")

#: a token wait reads at most this many events of the log to learn what each partition needs
SCAN_LIMIT = 10_000
_FIRST_RETRY = 0.1
_LAST_RETRY = 5.0


def assign_partitions(members: Sequence[str], member: str, count: int) -> frozenset[int]:
    """The partitions (of ``count``) that ``member`` owns among ``members``: round robin over
    the sorted member ids, so that every member computes the same assignment and no two
    members' shares differ by more than one partition."""
    ordered = sorted(set(members))
    if member not in ordered:
        return frozenset()
    return frozenset(range(ordered.index(member), count, len(ordered)))


@dataclass
class WorkerStatus:
    """What a :class:`PartitionedWorker` is doing: its member id, the live members it last saw,
    the partitions it owns, and how many times its share changed."""

    member: str | None = None
    members: tuple[str, ...] = ()
    owned: frozenset[int] = frozenset()
    rebalances: int = 0
    error: str | None = None


class PartitionedWorker:
    """Runs its share of the partitions of ``projections`` (see the module docs).

    ``source_of(projection, partition)`` gives the events of one partition (e.g.
    ``cqrskit.nats.JetStreamSource(..., partition=partition)``); ``read_store`` keeps the read
    model and checkpoints and must offer groups (:class:`WorkerGroups`: PostgreSQL). Failed
    runners are restarted by a :class:`Supervisor` (:attr:`supervisor`); ``on_error`` names
    each projection's :class:`ErrorPolicy` (default ``stop``), which its partitions follow.
    """

    def __init__(
        self,
        projections: Sequence[Projection],
        *,
        group: str,
        partitions: int,
        source_of: Callable[[Projection, int], EventSource],
        events: EventStore,
        read_store: ReadStore,
        codec: EventCodec,
        batch_size: int = 1000,
        rebalance_every: float = 0.5,
        backoff: Backoff | None = None,
        remedy: str = REBUILD,
        on_error: Mapping[str, ErrorPolicy] | None = None,
    ) -> None:
        if not isinstance(read_store, WorkerGroups):
            raise ConfigurationError(
                "partitioned workers need a read store that holds worker groups (PostgreSQL)"
            )
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ConfigurationError(f"partitions must be between 1 and {MAX_PARTITIONS}")
        self.projections = tuple(projections)
        self.group = group
        self.partitions = partitions
        self._groups: WorkerGroups = read_store
        self._source_of = source_of
        self._read = read_store
        self._codec = codec
        self._batch_size = batch_size
        self._every = rebalance_every
        self._on_error = dict(on_error or {})
        self.supervisor = Supervisor(events, read_store, backoff=backoff, remedy=remedy)
        self.status = WorkerStatus()
        self._runners: dict[str, ProjectionRunner] = {}

    @property
    def checkpoint_names(self) -> list[str]:
        """Every partition checkpoint of every projection, owned here or not."""
        return _checkpoint_names(self.projections, self.partitions)

    async def members(self) -> list[str]:
        """The live members of this worker's group (whether this worker runs or not)."""
        return await self._groups.group_members(self.group)

    async def reset_read_model(self, names: Sequence[str] | None = None) -> list[str]:
        """Empty the tables of the projections ``names`` (default: all of them), dead letters
        included, and forget every partition checkpoint of theirs (of any partition count: a
        stream created again with another count leaves none behind), in one read-store
        transaction; return the checkpoints forgotten.

        Safe while workers of the group run: each finds its checkpoint moved at its next batch
        and starts its partitions again from the start of the log, so the read model is built
        again with every event applied once (aggregates included, their rows emptied too).
        Raises :class:`ConfigurationError` for a name that is not one of the projections."""
        known = [projection.name for projection in self.projections]
        unknown = [name for name in names or () if name not in known]
        if unknown:
            raise ConfigurationError(f"no projection {unknown[0]!r} (known: {', '.join(known)})")
        chosen = [p for p in self.projections if names is None or p.name in names]
        current = _checkpoint_names(chosen, self.partitions)
        stale = await stored_partition_checkpoints(self._read, [p.name for p in chosen])
        forgotten = sorted({*current, *stale})
        await self._groups.reset_projections(forgotten, _tables_of(chosen, forgotten))
        log.info("group %s: read model of %s reset", self.group, ", ".join(p.name for p in chosen))
        return forgotten

    async def run(self) -> None:
        """Join the group and run this worker's share until cancelled; while the store is
        unreachable, stop every partition and join again with a backoff."""
        pause = _FIRST_RETRY
        self.supervisor.start()
        try:
            while True:
                rebalances = self.status.rebalances
                try:
                    await self._member_of_group()
                except Exception as error:  # a store outage, or a bug: join again either way
                    self.status.error = f"{type(error).__name__}: {error}"
                    log.warning(
                        "worker group %s: %s; joining again in %.1f s",
                        self.group, self.status.error, pause,
                        exc_info=not isinstance(error, StoreUnavailable),
                    )  # fmt: skip
                pause = _FIRST_RETRY if self.status.rebalances != rebalances else pause
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_RETRY)
        finally:
            await self.supervisor.stop()

    async def _member_of_group(self) -> None:
        async with self._groups.join_group(self.group) as group:
            self.status.member = group.member
            log.info("worker %s joined group %s", group.member, self.group)
            try:
                while True:
                    await self._rebalance(group)
                    await self._restart_the_reset()
                    self.status.error = None
                    await asyncio.sleep(self._every)
            finally:
                # Stop before the claims go (closing the group): the next owner never overlaps.
                for partition in sorted(self.status.owned):
                    await self._stop(partition)
                self._set_owned(frozenset(), self.status.members)

    async def _rebalance(self, group: WorkerGroup) -> None:
        members = await group.members()
        wanted = assign_partitions(members, group.member, self.partitions)
        owned = set(self.status.owned)
        for partition in sorted(owned - wanted):
            await self._stop_passing_cancellation_on(partition)
            await group.release(partition)
            owned.discard(partition)
        for partition in sorted(wanted - owned):
            if await group.claim(partition):
                self._start(partition)
                owned.add(partition)
        self._set_owned(frozenset(owned), tuple(members))

    def _set_owned(self, owned: frozenset[int], members: tuple[str, ...]) -> None:
        if owned != self.status.owned or members != self.status.members:
            self.status.rebalances += owned != self.status.owned
            log.info(
                "worker %s: %d members, owns partitions %s",
                self.status.member, len(members), sorted(owned),
            )  # fmt: skip
        self.status.owned, self.status.members = owned, members

    def _start(self, partition: int) -> None:
        for projection in self.projections:
            self._start_runner(projection, partition)

    def _start_runner(self, projection: Projection, partition: int) -> None:
        name = partition_checkpoint(projection.name, partition, self.partitions)
        runner = ProjectionRunner(
            projection.renamed(name),
            self._source_of(projection, partition),
            self._read,
            self._codec,
            batch_size=self._batch_size,
            use_lease=False,  # the partition's claim is the lease
            on_error=self._on_error.get(projection.name, ErrorPolicy.STOP),
        )
        self._runners[name] = runner
        self.supervisor.add(runner)

    async def _restart_the_reset(self) -> None:
        """Start again from their checkpoint the runners whose checkpoint went back (a reset,
        :meth:`reset_read_model`): a runner learns it when it commits its next batch, but one
        whose partition gets no new event would wait for one, its rows emptied meanwhile."""
        count = self.partitions
        owned = [
            (projection, partition, partition_checkpoint(projection.name, partition, count))
            for partition in sorted(self.status.owned)
            for projection in self.projections
        ]
        if not owned:
            return
        # Positions before the checkpoints: a batch committed meanwhile moves both forwards.
        applied = {name: self._runners[name].status.position for _, _, name in owned}
        stored = await self._groups.stored_checkpoints()
        for projection, partition, name in owned:
            if stored.get(name, 0) < applied[name]:
                log.info("worker %s: checkpoint %s was reset", self.status.member, name)
                with contextlib.suppress(KeyError):
                    await self.supervisor.remove(name)
                self._start_runner(projection, partition)

    async def _stop(self, partition: int) -> None:
        for projection in self.projections:
            name = partition_checkpoint(projection.name, partition, self.partitions)
            self._runners.pop(name, None)
            with contextlib.suppress(KeyError):
                await self.supervisor.remove(name)

    async def _stop_passing_cancellation_on(self, partition: int) -> None:
        """:meth:`_stop`, then raise a cancellation of this task that came meanwhile: waiting
        for the runner, the supervisor swallows it with the runner's, and a rebalance that went
        on would keep the worker from ever stopping."""
        await self._stop(partition)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError


class StorePartition:
    """The events of one partition (of ``count``) of an event store's log: an
    :class:`~cqrskit.EventSource` for a :class:`PartitionedWorker` without a log of its own
    (every partition then reads the whole log and keeps its share: JetStream's per-partition
    subjects, ``cqrskit.nats.JetStreamSource``, spare the reading)."""

    def __init__(self, events: EventStore, partition: int, count: int) -> None:
        if not 0 <= partition < count:
            raise ValueError(f"partition {partition} is not in 0..{count - 1}")
        self._events = events
        self._partition = partition
        self._count = count

    def _mine(self, batch: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        return [e for e in batch if partition_of(e.stream_id, self._count) == self._partition]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        while len(found) < limit:
            batch = await self._events.read_all(after, limit)
            if not batch:
                break
            found.extend(self._mine(batch))
            after = batch[-1].position
        return found[:limit]

    async def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        async for batch in self._events.subscribe_all(after, batch_size):
            mine = self._mine(batch)
            if mine:
                yield mine

    async def head_position(self) -> int:
        return await self._events.head_position()


def _checkpoint_names(projections: Sequence[Projection], partitions: int) -> list[str]:
    return [
        partition_checkpoint(projection.name, partition, partitions)
        for projection in projections
        for partition in range(partitions)
    ]


def _tables_of(projections: Sequence[Projection], checkpoints: Sequence[str]) -> list[Table]:
    """The projections' tables and the dead-letter tables of each of ``checkpoints``."""
    tables = {table.name: table for projection in projections for table in projection.tables}
    for name in checkpoints:
        tables.update((table.name, table) for table in DeadLetterTables(name).tables)
    return list(tables.values())


class PartitionedProgress:
    """How far the partitions of ``projections`` (``partitions`` of them, as run by
    :class:`PartitionedWorker`) have applied the log of ``events``, from their checkpoints in
    ``read_store``.

    A partition's checkpoint is the position of the last event *of that partition* it applied,
    so the log is applied up to position P when each partition checkpoint reached the last event
    of its partition at or before P. That is learnt by reading the log from the lowest
    checkpoint to P once (at most :data:`SCAN_LIMIT` events; beyond, the wait retries later).

    ``published(partition)``, when given, is the position of the newest event of ``partition``
    (of the whole log for None) that the workers' log holds (e.g. JetStream's last message on
    the partition's subject). A partition whose checkpoint reached its newest published event
    has nothing left to apply up to P once the log holds P, however long ago its last event
    was: only the partitions still behind are scanned for, from the lowest of their checkpoints.
    """

    def __init__(
        self,
        events: EventStore,
        read_store: ReadStore,
        projections: Sequence[str],
        partitions: int,
        *,
        published: Callable[[int | None], Awaitable[int]] | None = None,
        scan_limit: int = SCAN_LIMIT,
    ) -> None:
        self._events = events
        self._read = read_store
        self._projections = tuple(projections)
        self._partitions = partitions
        self._published = published
        self._scan_limit = scan_limit

    def only(self, projections: Sequence[str]) -> PartitionedProgress:
        """The progress of ``projections`` (some of these) alone."""
        return PartitionedProgress(
            self._events, self._read, projections, self._partitions,
            published=self._published, scan_limit=self._scan_limit,
        )  # fmt: skip

    async def progress(self, position: int) -> dict[str, tuple[int, int]]:
        """How far each projection's partitions have gone towards applying the log up to
        ``position``, as ``(done, total)`` along the span of positions from the log's first
        event, summed over the partitions (for a progress bar: positions need not be dense).

        A partition's goal is ``position``, or with ``published`` the newest event of that
        partition the log holds when that is earlier: once the log holds ``position``, every
        goal reached means :meth:`applied_up_to` holds."""
        first = await self._events.read_all(0, 1)
        start = first[0].position - 1 if first else 0
        goals = [position] * self._partitions
        if self._published is not None:
            newest = await asyncio.gather(*(self._published(p) for p in range(self._partitions)))
            goals = [min(position, last) for last in newest]
        checkpoints = await self.checkpoints()
        found = {}
        for projection in self._projections:
            done = total = 0
            for partition, goal in enumerate(goals):
                at = checkpoints[partition_checkpoint(projection, partition, self._partitions)]
                span = max(goal - start, 0)
                done, total = done + min(max(at - start, 0), span), total + span
            found[projection] = (done, total)
        return found

    async def checkpoints(self) -> dict[str, int]:
        """Every partition checkpoint, by name."""
        names = [
            (projection, partition_checkpoint(projection, p, self._partitions))
            for projection in self._projections
            for p in range(self._partitions)
        ]
        positions = await asyncio.gather(*(self._read.checkpoint(name) for _, name in names))
        return {name: position for (_, name), position in zip(names, positions, strict=True)}

    async def applied_up_to(self, position: int) -> bool:
        """Whether every partition has applied every event at or before ``position``."""
        return await self.wait_for_position(position, 0.0)

    async def wait_for_position(self, position: int, timeout: float) -> bool:
        """Wait until every partition has applied the log up to ``position``; False when
        ``timeout`` seconds run out first. Raises :class:`StoreUnavailable`."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            checkpoints = await self.checkpoints()
            needs = await self._needs(await self._behind(checkpoints, position), position)
            if needs is not None:
                pending = {n: w for n, w in needs.items() if checkpoints[n] < w}
                while pending:
                    if time.monotonic() >= deadline:
                        return False
                    await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                    pause = min(pause * 2, 0.05)
                    found = await asyncio.gather(*(self._read.checkpoint(n) for n in pending))
                    pending = {
                        n: w for (n, w), at in zip(pending.items(), found, strict=True) if at < w
                    }
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)

    async def _behind(self, checkpoints: dict[str, int], position: int) -> dict[str, int]:
        """The checkpoints that may still have events to apply up to ``position``."""
        behind = {name: at for name, at in checkpoints.items() if at < position}
        if not behind or self._published is None or await self._published(None) < position:
            return behind
        # Read after the log's head reached the position: each holds every event up to it.
        newest = await asyncio.gather(*(self._published(p) for p in range(self._partitions)))
        return {
            name: at
            for projection in self._projections
            for partition, last in enumerate(newest)
            if (name := partition_checkpoint(projection, partition, self._partitions)) in behind
            and (at := behind[name]) < min(position, last)
        }

    async def _needs(self, checkpoints: dict[str, int], position: int) -> dict[str, int] | None:
        """The position each checkpoint must reach (by name), or None if more than the scan limit of
        events lie between the lowest of ``checkpoints`` and ``position``."""
        lowest = min(checkpoints.values(), default=position)
        last_of: dict[int, int] = {}
        after, read = lowest, 0
        while after < position:
            batch = await self._events.read_all(after, min(1000, self._scan_limit - read + 1))
            if not batch:
                break
            for event in batch:
                if event.position > position:
                    break
                last_of[partition_of(event.stream_id, self._partitions)] = event.position
            after, read = batch[-1].position, read + len(batch)
            if read > self._scan_limit and after < position:
                return None
        return {
            partition_checkpoint(projection, partition, self._partitions): last
            for projection in self._projections
            for partition, last in last_of.items()
        }
