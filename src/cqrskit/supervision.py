"""Projection supervision: run a set of projections, restart the ones that fail, say how each is.

A :class:`Supervisor` owns one task per :class:`~cqrskit.ProjectionRunner`. A runner that
stops on an error (the database went away, a handler raised) is restarted after an
exponential backoff with jitter (:class:`Backoff`); its checkpoint is reloaded from the read
store, so a restart never applies an event twice or skips one. Leases are taken by the runner
where the read store offers them: a process that does not hold a projection's lease stands by.

:meth:`Supervisor.status` says, without any I/O, what each projection is doing in this process
(:class:`ProjectionState`); :meth:`Supervisor.report` adds the figures read from the stores
(checkpoint, head, lag in events and in seconds). :meth:`Supervisor.wait_for_position` is
read-your-writes: it waits until every projection has applied the log up to a position,
wherever the projection runs.

Blue/green versions (:mod:`cqrskit.versions`): runners of several versions of one projection
may be supervised together. A building version that has caught up with the log is switched in
(it serves from then on) and the versions it replaced stop; their tables are dropped once
``drop_retired_after`` seconds have passed. Read-your-writes waits for the serving version.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cqrskit.deadletters import (
    DeadLetter,
    DeadLetterTables,
    ProjectionHalted,
    dead_letter_count,
    halted_event,
)
from cqrskit.errors import ConfigurationError, ReadModelMismatch, StoreUnavailable
from cqrskit.partitions import stored_partition_checkpoints
from cqrskit.projections import ProjectionRunner, version_key
from cqrskit.readmodel import ReadStore
from cqrskit.store import EventStore
from cqrskit.versions import SERVING_REFRESH, ProjectionVersions, VersionRole

__all__ = [
    "APPLIED_MEMORY",
    "LAG_CAP",
    "Backoff",
    "ProjectionReport",
    "ProjectionState",
    "Supervisor",
    "verify_read_model",
]

#: lag in events is counted by reading at most this many unapplied events
LAG_CAP = 10_000
#: events per second are averaged over this many seconds of committed batches
RATE_WINDOW = 10.0
#: how many recent batch commits of each projection :meth:`Supervisor.applied_at` remembers
APPLIED_MEMORY = 10_000
#: what a :class:`~cqrskit.ReadModelMismatch` tells the user to do, unless told otherwise
REBUILD = "rebuild it (ProjectionRunner.rebuild)"
#: what to do about a read model that partitioned workers keep (see :func:`verify_read_model`)
PARTITIONED = (
    "read it where the workers' group runs (PartitionedProgress for consistency tokens)"
    " instead of running the projection on it here"
)

log = logging.getLogger("cqrskit.supervision")


class ProjectionState(enum.StrEnum):
    """What a projection is doing, as far as this process knows."""

    #: following the log; applies new events as they come
    RUNNING = "running"
    #: starting, or applying the backlog the log held when it started (or took its lease)
    CATCHING_UP = "catching_up"
    #: waiting for the lease another process holds (PostgreSQL); takes over if that one stops
    STANDING_BY = "standing_by"
    #: stopped on an error; restarts after a backoff (``last_error``, ``retry_in``)
    BACKING_OFF = "backing_off"
    #: restarted after an error and not yet through a batch (``last_error``): not ready until
    #: it commits one or reaches the head, so that a projection failing at every attempt (a
    #: read model locked by another program) does not read as ready between its retries
    RETRYING = "retrying"
    #: this process ran it and stopped it (:meth:`Supervisor.stop`)
    STOPPED = "stopped"
    #: this process does not run it (another process may: its checkpoint still tells)
    EXTERNAL = "external"
    #: a version replaced by a newer one (:mod:`cqrskit.versions`): no longer run
    RETIRED = "retired"
    #: met an event it cannot apply, policy ``stop``: waits for the event to be retried or
    #: discarded (:mod:`cqrskit.deadletters`), without restarting (a restart would fail again)
    HALTED = "halted"

    @property
    def ready(self) -> bool:
        """Whether a service whose projection is in this state may report itself ready: the
        projection is alive here, or it is not this process's to run.

        A halted projection is ready: every process would halt at the same event, so taking
        this one out of service would help nothing and stop the commands too; the halt is
        reported (``ProjectionReport.halted``) and must be fixed by hand."""
        return self not in (
            ProjectionState.BACKING_OFF,
            ProjectionState.RETRYING,
            ProjectionState.STOPPED,
        )


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: ``initial * multiplier**n`` capped at ``maximum``, each cut
    by a random share of up to ``jitter`` (so processes that failed together do not retry in
    lockstep). ``n`` counts the failures since the runner last committed a batch."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (counting from 0)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(failures, 64))
        return base * (1.0 - self.jitter * draw())


@dataclass(frozen=True)
class ProjectionReport:
    """One projection's state and figures.

    From :meth:`Supervisor.status` (no I/O): ``checkpoint`` is the one this process last saw
    (0 for a projection it does not run) and ``head``, ``lag_events`` and ``lag_seconds`` are
    None. From :meth:`Supervisor.report`: ``checkpoint`` is read from the read store, ``head``
    from the event store, ``lag_events`` counts the unapplied events (up to :data:`LAG_CAP`)
    and ``lag_seconds`` is the age of the oldest of them (0 when caught up).

    ``events_applied``, ``events_per_second`` (over the last :data:`RATE_WINDOW` seconds) and
    ``restarts`` count what this process did; ``last_error`` is the error that last stopped
    the projection here (kept after it recovers) and ``retry_in`` the seconds until its next
    restart while it backs off.

    ``dead_letters`` counts the projection's parked events and ``halted`` is the event it
    halted at (see :mod:`cqrskit.deadletters`): read from the read store by
    :meth:`Supervisor.report` (so they are right wherever the projection runs); from
    :meth:`Supervisor.status`, ``dead_letters`` is None and ``halted`` what this process saw.
    """

    name: str
    state: ProjectionState
    checkpoint: int
    head: int | None
    lag_events: int | None
    lag_seconds: float | None
    events_applied: int
    events_per_second: float
    restarts: int
    last_error: str | None
    retry_in: float | None
    dead_letters: int | None = None
    halted: DeadLetter | None = None
    #: which version of the projection this is, and what it is for (:mod:`cqrskit.versions`)
    version: int = 1
    role: VersionRole = VersionRole.SERVING

    @property
    def key(self) -> str:
        """The version's checkpoint key: the name for version 1, else ``name@v<version>``."""
        return version_key(self.name, self.version)


@dataclass(eq=False)
class _Supervised:
    runner: ProjectionRunner
    role: VersionRole = VersionRole.SERVING
    task: asyncio.Task[None] | None = None
    stopped: bool = False
    halted: DeadLetter | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dead_letters_ready: bool = False
    restarts: int = 0
    last_error: str | None = None
    retry_at: float | None = None
    #: restarted after an error, and no batch committed since
    retrying: bool = False
    started_at: float = 0.0
    batches: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    #: (checkpoint, wall-clock time) of each recent commit
    applied: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=APPLIED_MEMORY)
    )

    @property
    def name(self) -> str:
        return self.runner.projection.name

    @property
    def key(self) -> str:
        return self.runner.projection.key

    def state(self) -> ProjectionState:
        status = self.runner.status
        if self.role is VersionRole.RETIRED and (self.task is None or self.task.done()):
            return ProjectionState.RETIRED
        if self.task is None or self.task.done():
            return ProjectionState.STOPPED if self.stopped else ProjectionState.EXTERNAL
        if self.halted is not None:
            return ProjectionState.HALTED
        if self.retry_at is not None:
            return ProjectionState.BACKING_OFF
        if status.standing_by:
            return ProjectionState.STANDING_BY
        if status.running and status.position >= status.catch_up_target:
            return ProjectionState.RUNNING
        if self.retrying:
            return ProjectionState.RETRYING
        return ProjectionState.CATCHING_UP

    async def record_batch(self, handled: int) -> None:
        self.retrying = False
        now = time.monotonic()
        self.batches.append((now, handled))
        self.applied.append((self.runner.status.position, time.time()))
        self._forget_before(now - RATE_WINDOW)

    def applied_time(self, position: int) -> float | None:
        """When the commit that took the checkpoint to ``position`` or past it happened."""
        found = None
        for checkpoint, moment in reversed(self.applied):
            if checkpoint < position:
                break
            found = moment
        return found

    def events_per_second(self) -> float:
        now = time.monotonic()
        self._forget_before(now - RATE_WINDOW)
        if not self.batches:
            return 0.0
        span = min(RATE_WINDOW, now - self.started_at)
        return sum(handled for _, handled in self.batches) / max(span, 1e-3)

    def _forget_before(self, moment: float) -> None:
        while self.batches and self.batches[0][0] < moment:
            self.batches.popleft()


class Supervisor:
    """Runs projections in the background, restarts a failed one, and reports their state.

    Give it the stores and the runners (more can be added later with :meth:`add`); nothing
    runs until :meth:`start`. Before each (re)start, a projection's read model is checked
    against the event store (:func:`verify_read_model`): one built from another store, or
    ahead of the log, is not run (it backs off, saying ``remedy``) until it is rebuilt; one
    that partitioned workers keep is not run either (saying ``partitioned_remedy``).

    Projections a supervisor does not run are reported as
    :attr:`ProjectionState.EXTERNAL`, with the checkpoint another process stores: a service
    whose projections run in a separate worker still reports them and still waits for them.

    A projection that halts (:class:`~cqrskit.deadletters.ProjectionHalted`, policy ``stop``)
    is not restarted: it is :attr:`ProjectionState.HALTED` until :meth:`resume`, or until its
    checkpoint moves (the halted event retried or discarded, checked every ``halt_poll``
    seconds, from any process).
    """

    def __init__(
        self,
        events: EventStore,
        read_store: ReadStore,
        runners: Iterable[ProjectionRunner] = (),
        *,
        backoff: Backoff | None = None,
        remedy: str = REBUILD,
        partitioned_remedy: str = PARTITIONED,
        halt_poll: float = 2.0,
        versions: ProjectionVersions | None = None,
        drop_retired_after: float | None = None,
    ) -> None:
        self._events = events
        self._read = read_store
        self._halt_poll = halt_poll
        self._backoff = backoff or Backoff()
        self._remedy = remedy
        self._partitioned_remedy = partitioned_remedy
        #: the record of which version of each projection serves
        self.versions = versions or ProjectionVersions(read_store)
        self._drop_retired_after = drop_retired_after
        self._supervised: dict[str, _Supervised] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False
        for runner in runners:
            self.add(runner)

    @property
    def names(self) -> tuple[str, ...]:
        """The supervised projections' keys (their names; ``name@v<version>`` for versions
        after the first), in the order they were added."""
        return tuple(self._supervised)

    @property
    def started(self) -> bool:
        """Whether this supervisor runs its projections (between :meth:`start` and
        :meth:`stop`)."""
        return self._started

    def add(self, runner: ProjectionRunner) -> None:
        """Supervise ``runner`` too (started at once if the supervisor is). Raises
        :class:`ConfigurationError` if that version of the projection is supervised already."""
        name = runner.projection.key
        if name in self._supervised:
            raise ConfigurationError(f"projection {name!r} is supervised twice")
        entry = self._supervised[name] = _Supervised(runner)
        if self._started:
            self._launch(entry)

    async def remove(self, name: str) -> ProjectionRunner:
        """Stop supervising projection ``name`` (stopping it first) and return its runner.
        Raises :class:`KeyError` for a name it does not supervise."""
        entry = self._supervised[name]
        await self._halt(entry)
        del self._supervised[name]
        return entry.runner

    def start(self) -> None:
        """Run every supervised projection in the background until :meth:`stop`.

        Must be called on the event loop the projections are to run on.
        """
        self._started = True
        for entry in self._supervised.values():
            if entry.task is None or entry.task.done():
                self._launch(entry)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_versions(), name="projection-versions")

    def resume(self, name: str) -> None:
        """Restart projection ``name`` now if it is halted (after its halted event was retried
        or discarded); nothing otherwise. Raises :class:`KeyError` for a name it does not
        supervise."""
        entry = self._supervised[name]
        entry.halted = None  # at once: waiting for a position waits for it again
        entry.wake.set()

    async def stop(self) -> None:
        """Stop every projection; a batch in flight commits or rolls back whole."""
        self._started = False
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self._retiring:
            await asyncio.wait(set(self._retiring))
        for entry in self._supervised.values():
            await self._halt(entry)

    @property
    def ready(self) -> bool:
        """Whether every projection is in a :attr:`ProjectionState.ready` state."""
        return all(entry.state().ready for entry in self._supervised.values())

    def status(self) -> list[ProjectionReport]:
        """Each projection's state and this process's figures, without I/O (see
        :class:`ProjectionReport`)."""
        return [self._report(entry, None) for entry in self._supervised.values()]

    async def report(self) -> list[ProjectionReport]:
        """Each projection's state with checkpoint, head and lag read from the stores.

        Raises :class:`~cqrskit.StoreUnavailable` when a store cannot be reached. Positions
        need not be dense (PostgreSQL's are not), so lag in events is counted, not subtracted.
        """
        head = await self._events.head_position()
        now = time.time()
        lags: dict[int, tuple[int, float]] = {}

        async def figures(key: str) -> tuple[int, int, int, float]:
            checkpoint = await self._read.checkpoint(key)
            if checkpoint not in lags:
                unapplied = await self._events.read_all(checkpoint, LAG_CAP)
                age = now - unapplied[0].recorded_at.timestamp() if unapplied else 0.0
                lags[checkpoint] = (len(unapplied), max(0.0, age))
            return (checkpoint, head, *lags[checkpoint])

        every = await self.versions.all_versions()
        recorded = {(v.name, v.version): v for v in every}
        serving = {v.name: v.version for v in every if v.role is VersionRole.SERVING}
        reports = []
        for entry in list(self._supervised.values()):
            version = entry.runner.projection.version
            known = recorded.pop((entry.name, version), None)
            if known is not None:
                entry.role = known.role
            elif version < serving.get(entry.name, 1):  # retired, and its tables dropped
                entry.role = VersionRole.RETIRED
            report = self._report(entry, await figures(entry.key))
            if entry.role is VersionRole.RETIRED:  # its dead letters went with its tables
                reports.append(report)
                continue
            tables = await self._dead_letters(entry)
            state = report.state
            # A projection at work here is not halted (it clears a stored halt as it passes)
            alive = state in (ProjectionState.RUNNING, ProjectionState.CATCHING_UP)
            halted = entry.halted if alive else await halted_event(self._read, tables)
            if halted is not None and state is ProjectionState.EXTERNAL:
                state = ProjectionState.HALTED  # wherever it runs, it stands at that event
            count = await dead_letter_count(self._read, tables)
            reports.append(
                dataclasses.replace(report, state=state, dead_letters=count, halted=halted)
            )
        # Versions this process does not run, built or kept by another (a deploy under way).
        for other in recorded.values():
            checkpoint, head, lag_events, lag_seconds = await figures(other.key)
            reports.append(
                ProjectionReport(
                    name=other.name,
                    state=ProjectionState.RETIRED
                    if other.role is VersionRole.RETIRED
                    else ProjectionState.EXTERNAL,
                    checkpoint=checkpoint,
                    head=head,
                    lag_events=lag_events,
                    lag_seconds=lag_seconds,
                    events_applied=0,
                    events_per_second=0.0,
                    restarts=0,
                    last_error=None,
                    retry_in=None,
                    version=other.version,
                    role=other.role,
                )
            )
        return reports

    async def wait_for_position(self, position: int, timeout: float) -> bool:
        """Wait until every projection has applied the log up to ``position``; False when
        ``timeout`` seconds run out first.

        A projection running in this process wakes the wait as soon as it commits a batch; any
        other (standing by, backing off, or run by another process) is followed through the
        checkpoint stored in the read store. A halted projection (here, or as recorded in the
        read store by the process that runs it) is not waited for: it would never get there,
        and its read model answers as of its halt (which :meth:`report` shows). Raises
        :class:`~cqrskit.StoreUnavailable` when the read store cannot be reached.
        """
        deadline = time.monotonic() + timeout
        for name in dict.fromkeys(entry.name for entry in self._supervised.values()):
            if not await self._wait_for_serving(name, position, deadline):
                return False
        return True

    async def applied_at(self, position: int, timeout: float) -> dict[str, float | None]:
        """When each projection applied the event at ``position``: the wall-clock time
        (seconds since the epoch) of the commit of the batch that took its checkpoint to or
        past ``position``, waiting up to ``timeout`` seconds for those not there yet.

        None for a projection that did not get there in time, or whose commit this process
        did not see (another process runs it, or it was more than :data:`APPLIED_MEMORY`
        batches ago). Raises :class:`~cqrskit.StoreUnavailable` like :meth:`wait_for_position`.
        """
        deadline = time.monotonic() + timeout
        times: dict[str, float | None] = {}
        for entry in list(self._supervised.values()):
            if entry.role is not VersionRole.SERVING:
                continue
            reached = await self._wait_for(entry, position, deadline)
            times[entry.name] = entry.applied_time(position) if reached else None
        return times

    # -- private --

    def _report(
        self, entry: _Supervised, figures: tuple[int, int, int, float] | None
    ) -> ProjectionReport:
        status = entry.runner.status
        checkpoint, head, lag_events, lag_seconds = figures or (status.position, None, None, None)
        retry_in = None if entry.retry_at is None else max(0.0, entry.retry_at - time.monotonic())
        return ProjectionReport(
            name=entry.name,
            state=entry.state(),
            checkpoint=checkpoint,
            head=head,
            lag_events=lag_events,
            lag_seconds=lag_seconds,
            events_applied=status.events_applied,
            events_per_second=entry.events_per_second(),
            restarts=entry.restarts,
            last_error=entry.last_error,
            retry_in=retry_in,
            halted=entry.halted,
            version=entry.runner.projection.version,
            role=entry.role,
        )

    def _launch(self, entry: _Supervised) -> None:
        entry.stopped = False
        entry.started_at = time.monotonic()
        entry.task = asyncio.create_task(self._supervise(entry), name=f"projection:{entry.key}")

    async def _halt(self, entry: _Supervised) -> None:
        task, entry.task = entry.task, None
        entry.stopped = True
        entry.retry_at, entry.retrying = None, False
        if task is None or task.done():
            return
        # Cancelled again until it ends: a library's asyncio.wait_for (psycopg_pool waiting for
        # a connection, nats-py for a message) loses a cancellation that arrives as its wait
        # ends (Python 3.11), and the runner would run on. The caller's own cancellation is
        # passed on once the runner stopped, never swallowed with the runner's.
        cancelled = False
        while not task.done():
            task.cancel()
            try:
                await asyncio.wait({task}, timeout=0.5)
            except asyncio.CancelledError:
                cancelled = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("projection %s stopped at checkpoint %d", entry.key, entry.runner.status.position)
        if cancelled:
            raise asyncio.CancelledError

    async def _supervise(self, entry: _Supervised) -> None:
        runner, failures = entry.runner, 0
        while True:
            applied_before = runner.status.events_applied
            position_before = runner.status.position
            try:
                await verify_read_model(
                    self._events,
                    self._read,
                    [entry.key],
                    remedy=self._remedy,
                    partitioned_remedy=self._partitioned_remedy,
                )
                if not await self._take_role(entry):
                    return  # a retired version: never run again

                async def committed(handled: int, entry: _Supervised = entry) -> None:
                    await entry.record_batch(handled)
                    if entry.role is VersionRole.BUILDING:
                        await self._switch_if_caught_up(entry)

                await runner.run(on_batch=committed)
                error: Exception = RuntimeError("the runner returned")
            except ProjectionHalted as halted:
                await self._while_halted(entry, halted)
                failures = 0
                continue
            except Exception as failure:
                error = failure
            progressed = (
                runner.status.events_applied != applied_before
                or runner.status.position != position_before
            )
            failures = 0 if progressed else failures + 1
            delay = self._backoff.delay(max(failures - 1, 0))
            entry.last_error = f"{type(error).__name__}: {error}"
            entry.retry_at = time.monotonic() + delay
            log.warning(
                "projection %s stopped at checkpoint %d: %s; restarting in %.2f s",
                entry.name,
                runner.status.position,
                entry.last_error,
                delay,
                # an outage or a refused read model needs no traceback: the message says it all
                exc_info=not isinstance(error, StoreUnavailable | ReadModelMismatch),
            )
            await asyncio.sleep(delay)
            entry.retry_at, entry.retrying = None, True
            entry.restarts += 1
            log.info("projection %s restarting (restart %d)", entry.name, entry.restarts)

    async def _while_halted(self, entry: _Supervised, halted: ProjectionHalted) -> None:
        """Wait, without restarting, until :meth:`resume` or until the stored checkpoint is
        no longer the halted one's (the event was retried or discarded, maybe elsewhere)."""
        entry.halted, entry.last_error = halted.letter, str(halted)
        at = entry.runner.status.position
        log.error("%s; waiting for it to be retried or discarded", halted)
        entry.wake.clear()
        try:
            while not entry.wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._halt_poll):
                        await entry.wake.wait()
                with contextlib.suppress(StoreUnavailable):
                    if await self._read.checkpoint(entry.key) != at:
                        break
        finally:
            entry.halted = None
        entry.restarts += 1
        log.info("projection %s resuming after its halt (restart %d)", entry.name, entry.restarts)

    async def _take_role(self, entry: _Supervised) -> bool:
        """Record the entry's version and learn its role; False for a retired version."""
        projection = entry.runner.projection
        await self.versions.declare([projection])
        recorded = await self.versions.versions(projection.name)
        found = next((v for v in recorded if v.version == projection.version), None)
        serving = next((v.version for v in recorded if v.role is VersionRole.SERVING), 1)
        if found is not None:
            entry.role = found.role
        else:  # dropped after it retired
            entry.role = VersionRole.RETIRED if projection.version < serving else entry.role
        if entry.role is VersionRole.RETIRED:
            entry.stopped = True
            log.info("projection %s is retired: not run", entry.key)
            return False
        return True

    async def _switch_if_caught_up(self, entry: _Supervised) -> None:
        status = entry.runner.status
        if not status.running or status.position < status.catch_up_target:
            return
        # The head is read now: every event appended before the switch is in the new version.
        if status.position < await self._events.head_position():
            return
        projection = entry.runner.projection
        if await self.versions.switch(projection.name, projection.version):
            log.info("projection %s caught up at %d: it serves now", entry.key, status.position)
        await self._follow_versions(projection.name)

    async def _follow_versions(self, name: str) -> None:
        """Align the roles of this process's versions of ``name`` with the record, stopping
        the retired ones."""
        recorded = {v.version: v.role for v in await self.versions.versions(name)}
        serving = next((v for v, role in recorded.items() if role is VersionRole.SERVING), 1)
        for entry in list(self._supervised.values()):
            if entry.name != name:
                continue
            version = entry.runner.projection.version
            role = recorded.get(version)
            if role is None:
                role = VersionRole.RETIRED if version < serving else entry.role
            entry.role = role
            task = entry.task
            running = task is not None and not task.done() and task is not asyncio.current_task()
            if role is VersionRole.RETIRED and task is not None and running:
                # Halted in a task of its own: the caller (the watcher, or a runner's batch)
                # goes on, whatever becomes of its own cancellation meanwhile.
                log.info("projection %s retired: stopping it", entry.key)
                halting = asyncio.create_task(self._halt(entry), name=f"retire:{entry.key}")
                self._retiring.add(halting)
                halting.add_done_callback(self._retiring.discard)

    async def _watch_versions(self) -> None:
        """Every :data:`SERVING_REFRESH` seconds: follow switches made by other processes,
        switch in a building version that caught up without a batch to tell (an empty log),
        and drop retired versions past their grace period."""
        while True:
            await asyncio.sleep(SERVING_REFRESH)
            try:
                for name in dict.fromkeys(entry.name for entry in self._supervised.values()):
                    await self._follow_versions(name)
                for entry in list(self._supervised.values()):
                    if entry.role is VersionRole.BUILDING and entry.task is not None:
                        await self._switch_if_caught_up(entry)
                if self._drop_retired_after is not None:
                    for dropped in await self.versions.drop_retired(grace=self._drop_retired_after):
                        log.info("projection %s: retired tables dropped", dropped.key)
            except Exception as error:  # an outage: the next round tries again
                log.warning("projection versions not checked: %s", error)

    async def _wait_for_serving(self, name: str, position: int, deadline: float) -> bool:
        while True:
            serving = await self.versions.serving(name)
            entry = next(
                (
                    e
                    for e in self._supervised.values()
                    if e.name == name and e.runner.projection.version == serving
                ),
                None,
            )
            # In slices: the serving version may change meanwhile (a switch, here or elsewhere).
            until = min(deadline, time.monotonic() + SERVING_REFRESH)
            if entry is not None:
                reached = await self._wait_for(entry, position, until)
            else:  # not run here: followed through its stored checkpoint
                reached = await self._wait_for_key(version_key(name, serving), position, until)
            if reached and await self.versions.serving(name) == serving:
                return True
            if time.monotonic() >= deadline:
                return False

    async def _wait_for_key(self, key: str, position: int, deadline: float) -> bool:
        pause = 0.001
        while await self._read.checkpoint(key) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)
        return True

    async def _wait_for(self, entry: _Supervised, position: int, deadline: float) -> bool:
        runner, pause = entry.runner, 0.001
        while True:
            if entry.halted is not None:
                return True
            remaining = deadline - time.monotonic()
            if runner.status.running and entry.task is not None and not entry.task.done():
                # Working in this process: its checkpoint is known without a query.
                if await runner.wait_for(position, max(0.0, min(remaining, 0.05))):
                    return True
            elif await self._read.checkpoint(entry.key) >= position:
                return True
            elif pause == 0.001 and await self._halted_before(entry, position):
                return True  # halted elsewhere (a worker): it would never get there
            else:
                await asyncio.sleep(max(0.0, min(pause, remaining)))
                pause = min(pause * 2, 0.05)
            if time.monotonic() >= deadline:
                return False

    async def _halted_before(self, entry: _Supervised, position: int) -> bool:
        """Whether another process runs the projection and it halted before ``position``."""
        if entry.task is not None and not entry.task.done():
            return False  # it runs here (resumed, or standing by): it may get past it
        halt = await halted_event(self._read, await self._dead_letters(entry))
        return halt is not None and halt.position <= position

    async def _dead_letters(self, entry: _Supervised) -> DeadLetterTables:
        """The projection's dead-letter tables, created if no runner has yet."""
        tables = entry.runner.projection.dead_letters
        if not entry.dead_letters_ready:
            await self._read.setup(tables.tables)
            entry.dead_letters_ready = True
        return tables


async def verify_read_model(
    events: EventStore,
    read_store: ReadStore,
    projections: Iterable[str],
    *,
    remedy: str = REBUILD,
    partitioned_remedy: str = PARTITIONED,
) -> None:
    """Check that the read model of each of ``projections`` belongs to ``events``: raise
    :class:`~cqrskit.ReadModelMismatch` (saying ``remedy``) if it records another store as its
    source, or if its checkpoint is ahead of the store's head (the events it applied are gone:
    the store was deleted or replaced). A projection with no recorded source and a checkpoint
    within the log (new, reset, or from a release before sources were recorded) is recorded as
    built from ``events``.

    Also refused (saying ``partitioned_remedy``): a projection whose read model partitioned
    workers keep (:func:`cqrskit.partitions.stored_partition_checkpoints`): run here as one
    projection from its own checkpoint, it would apply again every event they applied.
    """
    store_id = await events.store_id()
    names = list(projections)
    kept = await stored_partition_checkpoints(read_store, names)
    if kept:
        shown = ", ".join(kept[:3]) + (", ..." if len(kept) > 3 else "")
        owner = kept[0].rpartition("[")[0]
        raise ReadModelMismatch(
            owner, f"is kept by partitioned workers (checkpoints {shown})", partitioned_remedy
        )
    sources = {name: await read_store.source(name) for name in names}
    checkpoints = {name: await read_store.checkpoint(name) for name in names}
    head = await events.head_position()  # after the checkpoints: the head only grows
    for name in names:
        source = sources[name]
        if source is not None and source != store_id:
            raise ReadModelMismatch(
                name, f"was built from another event store ({source}, not {store_id})", remedy
            )
        if checkpoints[name] > head:
            raise ReadModelMismatch(
                name,
                f"is ahead of the event store (checkpoint {checkpoints[name]}, head {head}):"
                " the events it was built from are gone",
                remedy,
            )
        if source is None:
            await read_store.record_source(name, store_id)
