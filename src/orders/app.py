"""The Orders application and its composition root (:func:`build_app`).

:class:`OrdersApp` is what the entrypoints (CLI, HTTP, the projection worker) talk to: commands
(:meth:`OrdersApp.send`), queries (:attr:`OrdersApp.queries`), the event log, the projections'
state. Only this module chooses a backend (by URL) and touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cqrskit import (
    Backend,
    Command,
    CommandHandler,
    CommandResult,
    ConfigurationError,
    DeadLetter,
    ErrorPolicy,
    EventCodec,
    EventSource,
    Metadata,
    PartitionedProgress,
    PartitionedWorker,
    Projection,
    ProjectionHalted,
    ProjectionReport,
    ProjectionRunner,
    ReadModelMismatch,
    RecordedEvent,
    StreamNotFound,
    Supervisor,
    UndecodableEvent,
    UnknownEventType,
    VersionRole,
    deadletters,
    supervision,
    tracing,
)
from cqrskit.backends import open_backend
from cqrskit.deadletters import RetryOutcome
from cqrskit.feed import EventFeed, FeedSubscription
from cqrskit.live import LiveQueries
from cqrskit.snapshots import SnapshotPolicy
from cqrskit.versions import ProjectionVersion, ServingReadStore
from cqrskit.workers import stored_partition_checkpoints
from orders.domain import (
    EVENT_TYPES,
    STATE_VERSION,
    UPCASTERS,
    AddItems,
    CreateOrder,
    OrderState,
    SubmitOrder,
    order_decider,
    stream_id,
)
from orders.errors import (
    ConsistencyTimeout,
    OrderNotFound,
    PartitionedReadModel,
    TokenBeyondHead,
    UnknownProjection,
)
from orders.live import OrderSubscriptions
from orders.projections import PROJECTIONS
from orders.queries import OrderQueries

__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_ERROR_POLICIES",
    "OrdersApp",
    "RebuildOutcome",
    "RebuildProgress",
    "Settings",
    "assemble_app",
    "build_app",
    "register_commands",
]

DEFAULT_DB_URL = "sqlite:///.cqrskit/orders.db"
#: what to do about a read model that is not the event store's
REBUILD = "run `orders projections rebuild` to build it again from this event store"
PARTITIONED = (
    "start this process as one of the workers' deployment (`--nats URL` and `--stream` for"
    " `orders serve` and `orders projections rebuild`; CQRSKIT_PARTITIONED=1 with"
    " CQRSKIT_NATS_URL for every command), so that it reads that read model instead of running"
    " its projections on it again"
)
#: ``on_progress(projection, done, total)`` during a rebuild, in units of the log's span
RebuildProgress = Callable[[str, int, int], Awaitable[None]]
#: seconds between two looks at the partitions during a partitioned rebuild
_REBUILD_POLL = 0.25
#: One broken order must not stop every order from being shown: ``orders`` parks its events.
#: Parking an order's events would leave the totals silently wrong: ``order_stats`` stops.
DEFAULT_ERROR_POLICIES: Mapping[str, ErrorPolicy] = {
    "orders": ErrorPolicy.PARK,
    "order_stats": ErrorPolicy.STOP,
}


def _error_policies(text: str) -> dict[str, ErrorPolicy]:
    """``orders=park,order_stats=stop`` over :data:`DEFAULT_ERROR_POLICIES`."""
    policies = dict(DEFAULT_ERROR_POLICIES)
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, policy = entry.partition("=")
        if policy.strip() not in tuple(ErrorPolicy):
            raise ConfigurationError(
                f"CQRSKIT_PROJECTION_ERRORS: {entry!r} is not PROJECTION=stop or PROJECTION=park"
            )
        known = [projection.name for projection in PROJECTIONS]
        if name.strip() not in known:
            raise ConfigurationError(
                f"CQRSKIT_PROJECTION_ERRORS: no projection {name.strip()!r} (known: "
                f"{', '.join(known)})"
            )
        policies[name.strip()] = ErrorPolicy(policy.strip())
    return policies


@dataclass(frozen=True)
class RebuildOutcome:
    """What :meth:`OrdersApp.rebuild` did: the projections it rebuilt, up to which position of
    the log, and, for a read model kept by partitioned workers, its partition count, the other
    live workers of the group at the end, and whether this process ran a worker for it (it
    does while the group has none)."""

    projections: tuple[str, ...]
    position: int
    partitions: int | None = None
    workers: int = 0
    in_process: bool = True


_SCALE_OUT_VARIABLES = (
    ("CQRSKIT_NATS_URL", "nats_url"),
    ("CQRSKIT_NATS_STREAM", "nats_stream"),
    ("CQRSKIT_READ_DB", "read_db_url"),
    ("CQRSKIT_NODE_NAME", "node_name"),
)


@dataclass(frozen=True)
class Settings:
    """Everything the Orders application can be configured with."""

    db_url: str = DEFAULT_DB_URL
    #: how long a query carrying a consistency token waits for the read model (seconds)
    consistency_timeout: float = 5.0
    #: events per projection transaction
    projection_batch_size: int = 1000
    #: snapshot an order's state every this many events (0: never)
    snapshot_every: int = 100
    #: NATS server with JetStream for scale-out (relay, node read models, partitioned workers)
    nats_url: str | None = None
    #: the JetStream stream (and subject prefix) of this deployment's events
    nats_stream: str = "orders"
    #: this node's own read model (fed from JetStream), e.g. ``sqlite:///node.read.db``
    read_db_url: str | None = None
    #: this node's name (its JetStream consumers); default: derived from ``read_db_url``
    node_name: str | None = None
    #: the read model (in ``db_url``, PostgreSQL) is kept by partitioned workers fed from
    #: JetStream (``orders project --nats``): tokens wait for every partition
    partitioned: bool = False
    #: what each projection does with an event it cannot apply (``stop`` when not named)
    projection_errors: Mapping[str, ErrorPolicy] = field(
        default_factory=lambda: dict(DEFAULT_ERROR_POLICIES)
    )
    #: seconds after a projection version is replaced before its tables are dropped (None:
    #: only by ``orders projections drop-retired``)
    retired_grace: float | None = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``CQRSKIT_DB``, ``CQRSKIT_CONSISTENCY_TIMEOUT``,
        ``CQRSKIT_SNAPSHOT_EVERY``, ``CQRSKIT_RETIRED_GRACE`` (``never``: drop on command
        only), ``CQRSKIT_NATS_URL``, ``CQRSKIT_NATS_STREAM``,
        ``CQRSKIT_READ_DB``, ``CQRSKIT_NODE_NAME``, ``CQRSKIT_PARTITIONED`` and
        ``CQRSKIT_PROJECTION_ERRORS`` (``orders=park,order_stats=stop``), then ``overrides``
        (a None override keeps the environment's value). Raises
        :class:`~cqrskit.ConfigurationError` for a policy that is neither ``stop`` nor
        ``park``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "CQRSKIT_DB" in env:
            values["db_url"] = env["CQRSKIT_DB"]
        if "CQRSKIT_CONSISTENCY_TIMEOUT" in env:
            values["consistency_timeout"] = float(env["CQRSKIT_CONSISTENCY_TIMEOUT"])
        if "CQRSKIT_SNAPSHOT_EVERY" in env:
            values["snapshot_every"] = int(env["CQRSKIT_SNAPSHOT_EVERY"])
        if "CQRSKIT_RETIRED_GRACE" in env:
            grace = env["CQRSKIT_RETIRED_GRACE"]
            values["retired_grace"] = None if grace.lower() in ("", "never") else float(grace)
        if env.get("CQRSKIT_PARTITIONED", "").lower() in ("1", "true", "yes"):
            values["partitioned"] = True
        for variable, name in _SCALE_OUT_VARIABLES:
            if env.get(variable):
                values[name] = env[variable]
        if env.get("CQRSKIT_PROJECTION_ERRORS"):
            values["projection_errors"] = _error_policies(env["CQRSKIT_PROJECTION_ERRORS"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class OrdersApp:
    """The wired application: command handling, projections and queries over one backend."""

    settings: Settings
    backend: Backend
    codec: EventCodec
    commands: CommandHandler
    queries: OrderQueries
    runners: tuple[ProjectionRunner, ...]
    supervisor: Supervisor
    #: the event log followed once for every live subscriber (SSE clients, live queries)
    feed: EventFeed
    #: subscription queries: the queries' answers, again each time the read model changes them
    subscriptions: OrderSubscriptions = field(init=False)
    #: closed after the backend, last opened first (a node's JetStream connection, ...)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: with a read model kept by partitioned workers: this process's worker (run by
    #: :meth:`start_projections`) and what consistency tokens wait for
    partition_worker: PartitionedWorker | None = None
    partition_progress: PartitionedProgress | None = None
    _worker_task: asyncio.Task[None] | None = field(default=None, init=False)
    _refusal: ReadModelMismatch | None = field(default=None, init=False)
    _refused_at: float = field(default=0.0, init=False)
    _verified: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        live = LiveQueries(self.feed, self.wait_for_position)
        self.subscriptions = OrderSubscriptions(live, self.queries, self.projections)

    # -- commands --

    async def send(
        self,
        command: Command,
        *,
        idempotency_key: str | None = None,
        metadata: Metadata | None = None,
    ) -> CommandResult:
        """Handle ``command`` (see :meth:`cqrskit.CommandHandler.handle` for what it raises;
        a command for an order that does not exist raises :class:`OrderNotFound`)."""
        with tracing.span(f"command {command.command_type}"):
            try:
                return await self.commands.handle(
                    command, idempotency_key=idempotency_key, metadata=metadata
                )
            except StreamNotFound as missing:
                if isinstance(command, AddItems | SubmitOrder):
                    raise OrderNotFound(command.order_id) from missing
                raise

    @property
    def command_retries(self) -> int:
        """Commands decided again after a concurrency conflict, since the app started."""
        return self.commands.retries

    @property
    def snapshots_taken(self) -> int:
        """Snapshots of order states saved by this process, since the app started."""
        return self.commands.snapshots_taken

    # -- the event log --

    async def order_events(
        self, order_id: str, *, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The order's event stream from ``from_version`` on; :class:`OrderNotFound` if none."""
        store = self.backend.events
        found = await store.read_stream(stream_id(order_id), from_version=from_version, limit=limit)
        if not found and await store.stream_version(stream_id(order_id)) == 0:
            raise OrderNotFound(order_id)
        return found

    async def events(self, after: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to ``limit`` events of the whole log after global position ``after``."""
        return await self.backend.events.read_all(after, limit)

    def subscribe_events(
        self, after: int | None = None, *, buffer: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[FeedSubscription]:
        """The global event log after ``after`` (``None``: from now on), then live; see
        :meth:`cqrskit.feed.EventFeed.subscribe`."""
        return self.feed.subscribe(after, buffer=buffer)

    def read_current(self, recorded: RecordedEvent) -> RecordedEvent | None:
        """A stored event as this release reads it (upcast from an earlier shape or name),
        or None when this release cannot read it (an unknown type, no upcaster for its shape,
        an upcaster that fails, a payload that does not fit its class).

        The event log shows events as stored, facts never rewritten, and beside each its
        current form, the one commands and projections see.
        """
        try:
            current = self.codec.upcast(recorded)
            self.codec.decode(current)
        except (UndecodableEvent, UnknownEventType):
            return None
        return current

    async def head_position(self) -> int:
        """The global position of the newest event (0 when the log is empty)."""
        return await self.backend.events.head_position()

    # -- projections --

    @property
    def projection_names(self) -> tuple[str, ...]:
        """The projections' names (one per projection, however many versions it declares)."""
        return tuple(dict.fromkeys(runner.projection.name for runner in self.runners))

    @property
    def projection_keys(self) -> tuple[str, ...]:
        """The checkpoint key of each declared projection version (see
        :func:`cqrskit.projections.version_key`)."""
        return tuple(runner.projection.key for runner in self.runners)

    def newer_versions_serving(self, reports: Sequence[ProjectionReport]) -> list[str]:
        """A warning for each projection of ``reports`` whose serving version is newer than
        any this release declares: one a newer release built. While that release runs, it
        keeps the version up to date; once it is gone (a deploy rolled back), nothing does."""
        newest: dict[str, int] = {}
        for runner in self.runners:
            projection = runner.projection
            newest[projection.name] = max(newest.get(projection.name, 0), projection.version)
        return [
            f"projection {report.name}: version {report.version} serves, newer than this"
            f" release's {newest[report.name]}: only processes of the release that declares it"
            " keep it up to date (queries from here are stale and consistency tokens time out"
            " without them); to roll the projection back, deploy the old handlers as version"
            f" {report.version + 1} (docs/lifecycle.md, 'Rolling back')"
            for report in reports
            if report.role is VersionRole.SERVING
            and report.name in newest
            and report.version > newest[report.name]
        ]

    async def drop_retired_versions(self, grace: float = 0.0) -> list[ProjectionVersion]:
        """Drop the tables of projection versions replaced at least ``grace`` seconds ago
        (never sooner than :data:`cqrskit.versions.MIN_GRACE`); return those dropped."""
        return await self.supervisor.versions.drop_retired(grace=grace)

    async def projection_versions(self) -> list[ProjectionVersion]:
        """Every recorded version of every projection: serving, building or retired."""
        return await self.supervisor.versions.all_versions()

    async def projections(self) -> list[ProjectionReport]:
        """Each projection's state, checkpoint, head and lag (see
        :meth:`cqrskit.supervision.Supervisor.report`); right also when a separate worker runs
        the projections (they are then reported as ``external``)."""
        reports = await self.supervisor.report()
        if self.partition_worker is not None and self._worker_task is not None:
            reports.extend(await self.partition_worker.supervisor.report())
        return reports

    async def setup_read_model(self) -> None:
        """Create the read-model tables, load the projections' checkpoints and record their
        declared versions (a version replaced by a newer one is left alone: its tables go)."""
        await self.supervisor.versions.declare(runner.projection for runner in self.runners)
        for runner in await self._current_runners():
            await runner.setup()

    async def _current_runners(self, *, serving_only: bool = False) -> list[ProjectionRunner]:
        """The runners of the versions not retired (only those serving, with
        ``serving_only``)."""
        found = []
        for runner in self.runners:
            serving = await self.supervisor.versions.serving(runner.projection.name)
            version = runner.projection.version
            if version == serving or (version > serving and not serving_only):
                found.append(runner)
        return found

    async def verify_read_model(self) -> None:
        """Raise :class:`~cqrskit.ReadModelMismatch` (saying to run ``orders projections
        rebuild``) if the read model was built from another event store or is ahead of this
        one's head; see :func:`cqrskit.supervision.verify_read_model`."""
        try:
            await supervision.verify_read_model(
                self.backend.events,
                self.backend.read,
                self.projection_keys,
                remedy=REBUILD,
                partitioned_remedy=PARTITIONED,
            )
        except ReadModelMismatch as refusal:
            self._refusal, self._refused_at = refusal, time.monotonic()
            raise
        self._refusal, self._verified = None, True

    async def check_read_model(self) -> None:
        """What queries call first: raise the :class:`~cqrskit.ReadModelMismatch` of
        :meth:`verify_read_model` while the read model is refused (checked again at most once
        a second, so that a rebuild by another process is noticed); nothing once verified."""
        if self._verified:
            return
        if self._refusal is not None and time.monotonic() - self._refused_at < 1.0:
            raise self._refusal
        await self.verify_read_model()

    async def catch_up(self) -> list[ProjectionHalted]:
        """Run every projection (the serving version of each; a version being built is left
        to the services) up to the current head of the event store, then return the halts met
        on the way: a projection that halts (policy ``stop``) stays at its halted event while
        the others go on (raises :class:`~cqrskit.ReadModelMismatch` for a read model that is
        not this store's).

        One after the other: side by side they would contend for the read model's single
        writer (measured slower on SQLite).
        """
        await self.verify_read_model()
        halts = []
        for runner in await self._current_runners(serving_only=True):
            try:
                await runner.catch_up()
            except ProjectionHalted as halted:
                halts.append(halted)
        return halts

    async def rebuild(
        self, names: Sequence[str] | None = None, on_progress: RebuildProgress | None = None
    ) -> RebuildOutcome:
        """Empty the read models of ``names`` (default: every projection) and replay the whole
        event log into them, one after the other.

        ``on_progress(projection, done, total)`` is awaited after each batch. Positions need
        not be dense (PostgreSQL's are not): progress is measured along the span from the
        first event's position to the head's. Raises :class:`UnknownProjection`, and
        :class:`PartitionedReadModel` when partitioned workers keep the read model (this
        app is not one over it: see :meth:`_rebuild_partitions`).
        """
        if self.partition_worker is not None:
            return await self._rebuild_partitions(names, on_progress)
        known = self.projection_names
        for name in names or ():
            if name not in known:
                raise UnknownProjection(name, known)
        chosen = list(known if names is None else names)
        partitioned = await stored_partition_checkpoints(self.backend.read, chosen)
        if partitioned:
            raise PartitionedReadModel(partitioned)
        current = await self._current_runners()
        runners = [r for r in current if names is None or r.projection.name in names]
        head = await self.head_position()
        start, span = await self._span(head)
        for runner in runners:
            name = runner.projection.key

            async def advance(position: int, name: str = name) -> None:
                if on_progress is not None:
                    await on_progress(name, min(position, head) - start, span)

            await runner.rebuild(on_batch=advance)
            store_id = await self.backend.events.store_id()
            await self.backend.read.record_source(runner.projection.key, store_id)
            if on_progress is not None:
                await on_progress(name, span, span)
        self._refusal, self._verified = None, False
        return RebuildOutcome(tuple(r.projection.key for r in runners), head)

    async def _span(self, head: int) -> tuple[int, int]:
        """(the position before the first event, the span from it to ``head``, at least 1)."""
        first = await self.events(0, 1)
        start = first[0].position - 1 if first else 0
        return start, max(head - start, 1)

    async def _rebuild_partitions(
        self, names: Sequence[str] | None, on_progress: RebuildProgress | None
    ) -> RebuildOutcome:
        """Reset the read model the partitioned workers keep (every partition at once, see
        :meth:`cqrskit.PartitionedWorker.reset_read_model`) and wait until it has applied the
        log up to the head it had: the group's running workers rebuild it; while none runs,
        this process runs a worker of the group (stopped at the end)."""
        worker, progress = self.partition_worker, self.partition_progress
        assert worker is not None
        assert progress is not None
        known = tuple(projection.name for projection in worker.projections)
        for name in names or ():
            if name not in known:
                raise UnknownProjection(name, known)
        chosen = tuple(known if names is None else dict.fromkeys(names))
        head = await self.head_position()
        await worker.reset_read_model(chosen)
        running = self._worker_task is not None
        try:
            await self._wait_for_partitions(progress.only(chosen), head, on_progress)
            others = [m for m in await worker.members() if m != worker.status.member]
        finally:
            own = not running and self._worker_task is not None
            if own:
                await self.stop_projections()
        return RebuildOutcome(chosen, head, worker.partitions, len(others), own)

    async def _wait_for_partitions(
        self, progress: PartitionedProgress, head: int, on_progress: RebuildProgress | None
    ) -> None:
        """Wait until every partition has applied the log up to ``head``, reporting progress
        and running a worker here whenever the group has none."""
        worker, looks = self.partition_worker, 0
        assert worker is not None
        while True:
            if self._worker_task is None and not await worker.members():
                self.start_projections()
            figures = await progress.progress(head)
            for name, (done, total) in figures.items():
                if on_progress is not None:
                    await on_progress(name, done, max(total, 1))
            finished = all(done >= total for done, total in figures.values())
            # the exact test reads the log: only when the figures say done, or now and then
            if (finished or looks % 8 == 0) and await progress.applied_up_to(head):
                for name, (_, total) in figures.items():
                    if on_progress is not None:
                        await on_progress(name, max(total, 1), max(total, 1))
                return
            looks += 1
            await asyncio.sleep(_REBUILD_POLL)

    def start_projections(self) -> None:
        """Run the projections in the background, restarted when they fail, until
        :meth:`close` (see :class:`cqrskit.supervision.Supervisor`), and this process's
        partitioned worker, if it has one (it joins the group and takes a share)."""
        self.supervisor.start()
        worker = self.partition_worker
        if worker is not None and (self._worker_task is None or self._worker_task.done()):
            self._worker_task = asyncio.create_task(worker.run(), name="partitioned worker")

    async def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Wait until every projection has applied events up to ``position``, wherever it
        runs; False when ``timeout`` (default: the configured consistency timeout) runs out."""
        timeout = self.settings.consistency_timeout if timeout is None else timeout
        if self.partition_progress is not None:
            return await self.partition_progress.wait_for_position(position, timeout)
        return await self.supervisor.wait_for_position(position, timeout)

    async def projection_applied_at(self, position: int) -> dict[str, float | None]:
        """When each projection applied the event at ``position`` (wall-clock seconds, None if
        not within the consistency timeout or not seen by this process); see
        :meth:`cqrskit.supervision.Supervisor.applied_at`."""
        return await self.supervisor.applied_at(position, self.settings.consistency_timeout)

    async def read_your_writes(self, position: int) -> None:
        """Wait until the read model includes the write at ``position`` (a consistency token);
        raise :class:`ConsistencyTimeout` after the configured consistency timeout, and
        :class:`TokenBeyondHead` at once for a position the event store has not reached (a
        token of another store, or made up: waiting would never end)."""
        timeout = self.settings.consistency_timeout
        if await self.wait_for_position(position, 0):
            return
        # Not the visible head: on PostgreSQL an older transaction elsewhere in the cluster can
        # hold that behind an acknowledged append, whose token is then real and worth a wait.
        written = await self.backend.events.written_position()
        if position > written:
            raise TokenBeyondHead(position, written)
        if not await self.wait_for_position(position, timeout):
            raise ConsistencyTimeout(position, timeout)

    # -- dead letters --

    async def _runners_named(self, name: str | None) -> list[ProjectionRunner]:
        """The runners of ``name`` (default: all), but for retired versions (blue/green)."""
        if name is not None and name not in self.projection_names:
            raise UnknownProjection(name, self.projection_names)
        current = await self._current_runners()
        return [r for r in current if name is None or r.projection.name == name]

    async def dead_letters(
        self, name: str | None = None, *, order_id: str | None = None
    ) -> list[DeadLetter]:
        """The dead letters of projection ``name`` (default: every projection), of one order
        with ``order_id``, the halts among them (see :mod:`cqrskit.deadletters`). Raises
        :class:`UnknownProjection`."""
        stream = None if order_id is None else stream_id(order_id)
        found: list[DeadLetter] = []
        for runner in await self._runners_named(name):
            found += await deadletters.dead_letters(
                self.backend.read, runner.projection, stream_id=stream
            )
        return found

    async def retry_dead_letters(
        self, name: str | None = None, *, order_id: str | None = None
    ) -> dict[str, RetryOutcome]:
        """Apply the dead letters of ``name`` (default: every projection; of one order with
        ``order_id``) again, in order, each exactly once, and resume a projection halted in
        this process; what each retry did. Raises :class:`UnknownProjection`."""
        stream = None if order_id is None else stream_id(order_id)
        outcomes = {}
        for runner in await self._runners_named(name):
            projection = runner.projection
            outcomes[projection.key] = await deadletters.retry_dead_letters(
                self.backend.read, projection, self.codec, stream_id=stream
            )
            self.supervisor.resume(projection.key)
        return outcomes

    async def discard_dead_letters(
        self, name: str | None = None, *, order_id: str | None = None
    ) -> dict[str, int]:
        """Drop the dead letters of ``name`` (default: every projection; of one order with
        ``order_id``) unapplied; a discarded halt is skipped and its projection resumes. How
        many each projection dropped. Raises :class:`UnknownProjection`."""
        stream = None if order_id is None else stream_id(order_id)
        dropped = {}
        for runner in await self._runners_named(name):
            projection = runner.projection
            dropped[projection.key] = await deadletters.discard_dead_letters(
                self.backend.read, projection, stream_id=stream
            )
            self.supervisor.resume(projection.key)
        return dropped

    async def stop_projections(self) -> None:
        """Stop the background projections; a batch in flight commits or rolls back whole."""
        task, self._worker_task = self._worker_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.supervisor.stop()

    async def close(self) -> None:
        """Stop background projections and the event feed, and close the backend (and what
        else it opened)."""
        await self.stop_projections()
        await self.feed.close()
        await self.backend.close()
        for close in reversed(self.closers):
            await close()


async def build_app(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> OrdersApp:
    """Open the backend named by ``settings.db_url`` and wire the Orders application on it."""
    return await assemble_app(settings, await open_backend(settings.db_url), clock=clock)


async def assemble_app(
    settings: Settings,
    backend: Backend,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    source_of: Callable[[Projection], EventSource] | None = None,
    projections: Sequence[Projection] = PROJECTIONS,
    use_lease: bool = True,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> OrdersApp:
    """Wire the Orders application on an opened ``backend``: commands append to its event
    store, ``projections`` read from ``source_of(projection)`` (default: the event store) into
    its read store. ``closers`` run when the app closes (see :mod:`orders.scaleout`)."""
    codec = EventCodec(EVENT_TYPES, upcasters=UPCASTERS)
    commands = CommandHandler(backend.events, codec, clock=clock, snapshots=backend.snapshots)
    register_commands(commands)
    if settings.snapshot_every > 0 and backend.snapshots is not None:
        policy = SnapshotPolicy(
            OrderState, every=settings.snapshot_every, state_version=STATE_VERSION
        )
        commands.enable_snapshots(order_decider, policy)
    runners = tuple(
        ProjectionRunner(
            projection,
            backend.events if source_of is None else source_of(projection),
            backend.read,
            codec,
            batch_size=settings.projection_batch_size,
            use_lease=use_lease,
            on_error=settings.projection_errors.get(projection.name, ErrorPolicy.STOP),
        )
        for projection in projections
    )
    supervisor = Supervisor(
        backend.events,
        backend.read,
        runners,
        remedy=REBUILD,
        partitioned_remedy=PARTITIONED,
        drop_retired_after=settings.retired_grace,
    )
    feed = EventFeed(backend.events)
    # Queries read the serving version of each projection (blue/green, see cqrskit.versions).
    serving = ServingReadStore(backend.read, supervisor.versions, projections)
    app = OrdersApp(
        settings, backend, codec, commands, OrderQueries(serving), runners, supervisor, feed
    )
    app.closers.extend(closers)
    await app.setup_read_model()
    with contextlib.suppress(ReadModelMismatch):  # commands still work; queries say why not
        await app.verify_read_model()
    return app


def register_commands(handler: CommandHandler) -> None:
    """Route the Orders commands to the order decider, each on its order's stream."""

    def order_stream(command: CreateOrder | AddItems | SubmitOrder) -> str:
        return stream_id(command.order_id)

    handler.register(CreateOrder, order_decider, stream_id=order_stream, creates_stream=True)
    handler.register(AddItems, order_decider, stream_id=order_stream)
    handler.register(SubmitOrder, order_decider, stream_id=order_stream)
