"""Dead letters: what a projection does with an event it cannot apply.

An event meets a projection's :class:`ErrorPolicy` when its handler raises, or when it cannot
be decoded or upcast (:class:`~cqrskit.UndecodableEvent`):

- ``stop``: the projection applies the events before it, then halts (:class:`ProjectionHalted`);
  the event, its position, the error and the traceback are recorded as the projection's halt,
  which every process sees. Nothing after it is applied until it is retried or discarded.
- ``park``: the event, and every later event of the same stream (so that each stream's events
  are still applied in order), are set aside as dead letters with the error; the projection
  goes on with the other streams.

Dead letters are rows of two framework-owned read-model tables per projection
(:class:`DeadLetterTables`), written through :meth:`~cqrskit.ReadStore.apply` in the same
transaction as the projection's rows and checkpoint: on every backend, an event is applied,
parked or recorded as the halt exactly once. :func:`retry_dead_letters` applies a projection's
dead letters again (after a fix), stream by stream in order, each exactly once, and
:func:`discard_dead_letters` drops them. An error raised by the read store itself (the
database went away) is never taken for the event's: it propagates, and the projection is
restarted by its supervisor.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import re
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cqrskit.codec import EventCodec
from cqrskit.errors import CheckpointMoved, CqrsKitError
from cqrskit.messages import RecordedEvent
from cqrskit.readmodel import Column, ColumnType, ReadStore, Row, Table, ViewTransaction

__all__ = [
    "DeadLetter",
    "DeadLetterTables",
    "ErrorPolicy",
    "ProjectionHalted",
    "RetryOutcome",
    "dead_letter_count",
    "dead_letters",
    "discard_dead_letters",
    "halted_event",
    "parked_streams",
    "retry_dead_letters",
]

#: how many times a retry or a discard starts again when a runner commits meanwhile
_ATTEMPTS = 100
_PARKED, _HALTED = "parked", "halted"
_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


class ErrorPolicy(enum.StrEnum):
    """What a projection does with an event it cannot apply (see :mod:`cqrskit.deadletters`)."""

    #: apply the events before it, then halt until the event is retried or discarded
    STOP = "stop"
    #: set the event and the later events of its stream aside; go on with the other streams
    PARK = "park"


@dataclass(frozen=True)
class DeadLetter:
    """An event a projection could not apply, as stored.

    ``halted`` is true for the event a ``stop`` projection halted at (at most one per
    projection); otherwise it is parked. ``error`` and ``traceback`` are those of its last
    attempt; a parked event that was applied fine but waits behind an earlier dead letter of
    its stream has ``blocked_by`` (that letter's position) and no traceback. ``attempts``
    counts the failed attempts (0 for a blocked one).
    """

    projection: str
    event: RecordedEvent
    halted: bool
    error: str
    traceback: str
    failed_at: datetime
    attempts: int
    blocked_by: int | None

    @property
    def position(self) -> int:
        return self.event.position

    @property
    def stream_id(self) -> str:
        return self.event.stream_id


class ProjectionHalted(CqrsKitError):
    """A projection whose policy is ``stop`` met an event it could not apply, and halted.

    ``letter`` is the recorded halt: the event, its position, the error and the traceback.
    """

    def __init__(self, letter: DeadLetter) -> None:
        event = letter.event
        super().__init__(
            f"projection {letter.projection!r} halted at position {event.position} (event "
            f"{event.event_type} of stream {event.stream_id!r} version {event.stream_version}):"
            f" {letter.error}"
        )
        self.letter = letter


@dataclass(frozen=True)
class RetryOutcome:
    """What :func:`retry_dead_letters` did: how many dead letters it applied (and removed),
    and the ones that failed again (still stored, with their new error)."""

    applied: int
    failed: tuple[DeadLetter, ...]


def _table_name(prefix: str, projection: str) -> str:
    name = f"{prefix}_{_IDENTIFIER.sub('_', projection)}"
    if len(name) <= 60 and name == f"{prefix}_{projection}":
        return name
    # a projection name that is not an identifier, or too long for PostgreSQL: keep it unique
    digest = hashlib.blake2b(projection.encode(), digest_size=4).hexdigest()
    return f"{name[:51]}_{digest}"


@dataclass(frozen=True)
class DeadLetterTables:
    """The two read-model tables that hold one projection's dead letters.

    ``letters`` holds one row per dead letter (keyed by position); ``streams`` one row per
    parked stream, with its count, so that counting and checking a stream cost one small row.
    A :class:`~cqrskit.Projection` lists them among its tables: they are created, reset by a
    rebuild and dropped with its own.
    """

    projection: str
    letters: Table = field(init=False)
    streams: Table = field(init=False)

    def __post_init__(self) -> None:
        text, integer, timestamp = ColumnType.TEXT, ColumnType.INTEGER, ColumnType.TIMESTAMP
        letters = Table(
            _table_name("cqrskit_dead_letters", self.projection),
            columns=(
                Column("position", integer),
                Column("stream_id", text),
                Column("stream_version", integer),
                Column("event_id", text),
                Column("event_type", text),
                Column("schema_version", integer),
                Column("recorded_at", timestamp),
                Column("data", text),
                Column("metadata", text),
                Column("status", text),
                Column("error", text),
                Column("traceback", text),
                Column("failed_at", timestamp),
                Column("attempts", integer),
                Column("blocked_by", integer, nullable=True),
            ),
            key=("position",),
            indexes=(("stream_id", "position"), ("status", "position")),
        )
        streams = Table(
            _table_name("cqrskit_parked_streams", self.projection),
            columns=(
                Column("stream_id", text),
                Column("first_position", integer),
                Column("events", integer),
            ),
            key=("stream_id",),
        )
        object.__setattr__(self, "letters", letters)
        object.__setattr__(self, "streams", streams)

    @property
    def tables(self) -> tuple[Table, Table]:
        return (self.letters, self.streams)


class _Redeliverable(Protocol):
    """What dead letters need of a projection (a :class:`~cqrskit.Projection` is one)."""

    name: str
    dead_letters: DeadLetterTables

    def handles(self, codec: EventCodec, recorded: RecordedEvent) -> bool: ...

    def apply_event(
        self, codec: EventCodec, recorded: RecordedEvent, view: ViewTransaction
    ) -> bool: ...


# -- rows --


def _letter_row(
    letter: RecordedEvent,
    status: str,
    error: str,
    trace: str,
    attempts: int,
    blocked_by: int | None,
) -> Row:
    return {
        "position": letter.position,
        "stream_id": letter.stream_id,
        "stream_version": letter.stream_version,
        "event_id": str(letter.event_id),
        "event_type": letter.event_type,
        "schema_version": letter.schema_version,
        "recorded_at": letter.recorded_at,
        "data": letter.data.decode(),
        "metadata": letter.metadata.decode(),
        "status": status,
        "error": error,
        "traceback": trace,
        "failed_at": datetime.now(UTC),
        "attempts": attempts,
        "blocked_by": blocked_by,
    }


def _blocked_row(recorded: RecordedEvent, first: int) -> Row:
    error = f"waits behind the dead letter at position {first} of its stream"
    return _letter_row(recorded, _PARKED, error, "", 0, first)


def _letter_of(projection: str, row: Row) -> DeadLetter:
    event = RecordedEvent(
        event_id=uuid.UUID(row["event_id"]),
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        position=row["position"],
        recorded_at=row["recorded_at"],
        event_type=row["event_type"],
        schema_version=row["schema_version"],
        data=row["data"].encode(),
        metadata=row["metadata"].encode(),
    )
    return DeadLetter(
        projection=projection,
        event=event,
        halted=row["status"] == _HALTED,
        error=row["error"],
        traceback=row["traceback"],
        failed_at=row["failed_at"],
        attempts=row["attempts"],
        blocked_by=row["blocked_by"],
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- applying a batch under a policy --


class _EventFailed(Exception):
    """Raised out of a batch's write when event ``index`` could not be applied (private to
    the framework: the runner catches it, and the transaction has rolled back)."""

    def __init__(self, index: int, recorded: RecordedEvent, error: BaseException) -> None:
        super().__init__(_describe(error))
        self.index = index
        self.recorded = recorded
        self.error = _describe(error)
        self.traceback = "".join(traceback.format_exception(error))


class _GuardedView:
    """The batch's view, noting whether a read failed: the read store's own failure (the
    database went away mid-batch) must propagate, never be taken for the event's."""

    __slots__ = ("_view", "failure")

    def __init__(self, view: ViewTransaction) -> None:
        self._view = view
        self.failure: BaseException | None = None

    def get(self, table: Table, *key: Any) -> Row | None:
        try:
            return self._view.get(table, *key)
        except BaseException as error:
            self.failure = error
            raise

    def put(self, table: Table, row: Row) -> None:
        self._view.put(table, row)

    def delete(self, table: Table, *key: Any) -> None:
        self._view.delete(table, *key)

    def increment(self, table: Table, row: Row) -> None:
        self._view.increment(table, row)


def _apply_guarded(
    projection: _Redeliverable,
    codec: EventCodec,
    index: int,
    recorded: RecordedEvent,
    view: ViewTransaction,
) -> bool:
    """Apply one event (False if the projection does not handle it); raise
    :class:`_EventFailed` if the event (not the store) failed."""
    guarded = view if isinstance(view, _GuardedView) else _GuardedView(view)
    try:
        return projection.apply_event(codec, recorded, guarded)
    except Exception as error:
        if guarded.failure is not None:
            raise
        raise _EventFailed(index, recorded, error) from error


@dataclass
class _BatchPlan:
    """How a runner applies one batch under its projection's policy.

    ``parked`` are the streams the runner knows to be parked (each is checked against its
    row in the batch's transaction: another process may have retried or discarded it);
    ``failures`` the events found failing in earlier tries of this batch, parked this time
    (policy ``park``); ``stop_at`` the index of the event to halt at (policy ``stop``);
    ``clear_halt`` the position of a recorded halt to remove once the batch commits.
    """

    projection: _Redeliverable
    codec: EventCodec
    batch: Sequence[RecordedEvent]
    parked: frozenset[str]
    clear_halt: int | None = None
    failures: dict[int, _EventFailed] = field(default_factory=dict)
    stop_at: _EventFailed | None = None
    halt_attempts: int = 1
    #: after :meth:`write`: the streams parked once the batch commits, and the count it applied
    parked_after: set[str] = field(default_factory=set)
    handled: int = 0
    newly_parked: int = 0

    def write(self, view: ViewTransaction) -> None:
        """The batch's write: apply, park or halt each event (see the class)."""
        tables, projection = self.projection.dead_letters, self.projection
        if self.clear_halt is not None:
            view.delete(tables.letters, self.clear_halt)
        events = self.batch if self.stop_at is None else self.batch[: self.stop_at.index]
        streams = {recorded.stream_id for recorded in events}
        parked: dict[str, Row] = {}
        for stream in self.parked & streams:
            row = view.get(tables.streams, stream)
            if row is not None:
                parked[stream] = row
        handled = newly = 0
        guarded = _GuardedView(view)
        for index, recorded in enumerate(events):
            failure = self.failures.get(index)
            row = parked.get(recorded.stream_id)
            if failure is not None:
                parked[recorded.stream_id] = _park(view, tables, recorded, failure, None)
                newly += 1
            elif row is not None:
                if projection.handles(self.codec, recorded):
                    _park(view, tables, recorded, None, row)
                    newly += 1
            else:
                handled += _apply_guarded(projection, self.codec, index, recorded, guarded)
        if self.stop_at is not None:
            failed = self.stop_at
            view.put(
                tables.letters,
                _letter_row(
                    failed.recorded,
                    _HALTED,
                    failed.error,
                    failed.traceback,
                    self.halt_attempts,
                    None,
                ),
            )
        self.parked_after = set(parked) | (self.parked - streams)
        self.handled, self.newly_parked = handled, newly


def _park(
    view: ViewTransaction,
    tables: DeadLetterTables,
    recorded: RecordedEvent,
    failure: _EventFailed | None,
    stream: Row | None,
) -> Row:
    """Store ``recorded`` as a dead letter: failing (``failure``) or blocked behind its
    parked ``stream``; return the stream's row."""
    if failure is not None:
        view.put(
            tables.letters,
            _letter_row(recorded, _PARKED, failure.error, failure.traceback, 1, None),
        )
        stream = {"stream_id": recorded.stream_id, "first_position": recorded.position, "events": 1}
    else:
        assert stream is not None
        view.put(tables.letters, _blocked_row(recorded, stream["first_position"]))
        stream = {**stream, "events": stream["events"] + 1}
    view.put(tables.streams, stream)
    return stream


async def parked_streams(read_store: ReadStore, tables: DeadLetterTables) -> frozenset[str]:
    """The streams of a projection that have dead letters."""
    return frozenset(row["stream_id"] for row in await read_store.find(tables.streams))


# -- inspecting, retrying, discarding --


async def dead_letters(
    read_store: ReadStore, projection: _Redeliverable, *, stream_id: str | None = None
) -> list[DeadLetter]:
    """The dead letters of ``projection`` (of one stream with ``stream_id``), in position
    order, the halt (if any) among them."""
    where = None if stream_id is None else {"stream_id": stream_id}
    rows = await read_store.find(
        projection.dead_letters.letters, where=where, order_by=("position",)
    )
    return [_letter_of(projection.name, row) for row in rows]


async def dead_letter_count(read_store: ReadStore, tables: DeadLetterTables) -> int:
    """How many events of a projection are parked (the halt not counted)."""
    return sum(row["events"] for row in await read_store.find(tables.streams))


async def halted_event(read_store: ReadStore, tables: DeadLetterTables) -> DeadLetter | None:
    """The event a projection halted at, as recorded, or None when it is not halted."""
    rows = await read_store.find(tables.letters, where={"status": _HALTED}, limit=1)
    return _letter_of(tables.projection, rows[0]) if rows else None


async def retry_dead_letters(
    read_store: ReadStore,
    projection: _Redeliverable,
    codec: EventCodec,
    *,
    stream_id: str | None = None,
) -> RetryOutcome:
    """Apply the dead letters of ``projection`` again (of one stream with ``stream_id``):
    after a fix, a handler that raised may now succeed.

    Each parked stream is retried in one transaction, in order: the letters up to the first
    that fails again are applied and removed; that one keeps its place with its new error
    and the ones after it stay behind it. A halt is retried by applying the halted event
    and moving the checkpoint past it, so the projection resumes from there (a supervisor
    notices). Each letter is applied exactly once: the transactions are compare-and-set on
    the projection's checkpoint and on the stream's count, so a runner that parks more of
    the stream meanwhile makes the retry start again, never skip an event.
    """
    applied, failed = 0, []
    for stream in await _streams_to_handle(read_store, projection, stream_id):
        done, failure = await _retry_stream(read_store, projection, codec, stream)
        applied += done
        failed.extend(failure)
    halt = await halted_event(read_store, projection.dead_letters)
    if halt is not None and stream_id in (None, halt.stream_id):
        done, failure = await _retry_halt(read_store, projection, codec, halt)
        applied += done
        failed.extend(failure)
    return RetryOutcome(applied=applied, failed=tuple(failed))


async def discard_dead_letters(
    read_store: ReadStore, projection: _Redeliverable, *, stream_id: str | None = None
) -> int:
    """Drop the dead letters of ``projection`` (of one stream with ``stream_id``) without
    applying them, and return how many were dropped. The stream's later events are applied
    again as they come. A discarded halt is skipped: the checkpoint moves past it and the
    projection resumes after it."""
    dropped = 0
    tables = projection.dead_letters
    for stream in await _streams_to_handle(read_store, projection, stream_id):

        def drop(view: ViewTransaction, letters: list[DeadLetter], stream: str = stream) -> int:
            for letter in letters:
                view.delete(tables.letters, letter.position)
            view.delete(tables.streams, stream)
            return len(letters)

        dropped += await _in_stream_transaction(read_store, projection, stream, drop)
    halt = await halted_event(read_store, tables)
    if halt is not None and stream_id in (None, halt.stream_id):

        def skip(view: ViewTransaction) -> None:
            view.delete(tables.letters, halt.position)

        if await _past_halt(read_store, projection, halt, skip):
            dropped += 1
    return dropped


async def _streams_to_handle(
    read_store: ReadStore, projection: _Redeliverable, stream_id: str | None
) -> list[str]:
    streams = projection.dead_letters.streams
    rows = await read_store.find(streams, order_by=("first_position",))
    return [row["stream_id"] for row in rows if stream_id in (None, row["stream_id"])]


class _StreamChanged(Exception):
    """The stream's dead letters changed between reading them and the transaction."""


async def _in_stream_transaction(
    read_store: ReadStore,
    projection: _Redeliverable,
    stream: str,
    work: Callable[[ViewTransaction, list[DeadLetter]], int],
) -> int:
    """Run ``work(view, letters)`` on the stream's parked letters in one transaction that
    leaves the checkpoint where it is and fails if a runner changed the stream meanwhile;
    start again (with the letters read again) until it commits."""
    tables = projection.dead_letters
    for _ in range(_ATTEMPTS):
        letters = [
            letter
            for letter in await dead_letters(read_store, projection, stream_id=stream)
            if not letter.halted
        ]
        checkpoint = await read_store.checkpoint(projection.name)
        outcome = 0

        def write(view: ViewTransaction, letters: list[DeadLetter] = letters) -> None:
            nonlocal outcome
            row = view.get(tables.streams, stream)
            if row is None or row["events"] != len(letters):
                raise _StreamChanged
            outcome = work(view, letters)

        try:
            await read_store.apply(projection.name, checkpoint, checkpoint, write)
        except (CheckpointMoved, _StreamChanged):
            continue
        return outcome
    raise CheckpointMoved(projection.name, checkpoint, await read_store.checkpoint(projection.name))


async def _retry_stream(
    read_store: ReadStore, projection: _Redeliverable, codec: EventCodec, stream: str
) -> tuple[int, list[DeadLetter]]:
    failing: _Partial | None = None
    for _ in range(_ATTEMPTS):
        redeliver = functools.partial(_redeliver, projection, codec, stream, failing)
        try:
            done = await _in_stream_transaction(read_store, projection, stream, redeliver)
        except _Partial as partial:
            # rolled back: now apply the letters before it, and record its new error
            failing = partial
            continue
        if failing is None or done > failing.index:
            return done, []
        again = dataclasses.replace(
            failing.letter,
            error=failing.failure.error,
            traceback=failing.failure.traceback,
            attempts=failing.letter.attempts + 1,
            blocked_by=None,
            failed_at=datetime.now(UTC),
        )
        return done, [again]
    raise CheckpointMoved(projection.name, 0, await read_store.checkpoint(projection.name))


def _redeliver(
    projection: _Redeliverable,
    codec: EventCodec,
    stream: str,
    failing: _Partial | None,
    view: ViewTransaction,
    letters: list[DeadLetter],
) -> int:
    """Apply the stream's letters in order and remove them; with ``failing`` (found in an
    earlier try), only those before it, and record its new error: it heads the stream now."""
    tables = projection.dead_letters
    stop = len(letters)
    if (
        failing is not None
        and failing.index < stop
        and letters[failing.index].position == failing.letter.position
    ):
        stop = failing.index
    for index, letter in enumerate(letters[:stop]):
        try:
            _apply_guarded(projection, codec, index, letter.event, view)
        except _EventFailed as failure:
            raise _Partial(index, letter, failure) from failure
        view.delete(tables.letters, letter.position)
    rest = letters[stop:]
    if not rest:
        view.delete(tables.streams, stream)
        return stop
    assert failing is not None
    head, error = rest[0], failing.failure
    row = _letter_row(head.event, _PARKED, error.error, error.traceback, head.attempts + 1, None)
    view.put(tables.letters, row)
    for letter in rest[1:]:
        view.put(tables.letters, _blocked_row(letter.event, head.position))
    view.put(
        tables.streams, {"stream_id": stream, "first_position": head.position, "events": len(rest)}
    )
    return stop


class _Partial(Exception):
    """A retried stream's letter ``index`` failed again (the transaction rolled back)."""

    def __init__(self, index: int, letter: DeadLetter, failure: _EventFailed) -> None:
        super().__init__(failure.error)
        self.index = index
        self.letter = letter
        self.failure = failure


async def _retry_halt(
    read_store: ReadStore, projection: _Redeliverable, codec: EventCodec, halt: DeadLetter
) -> tuple[int, list[DeadLetter]]:
    tables = projection.dead_letters

    def apply(view: ViewTransaction) -> None:
        view.delete(tables.letters, halt.position)
        _apply_guarded(projection, codec, 0, halt.event, view)

    try:
        return (1 if await _past_halt(read_store, projection, halt, apply) else 0), []
    except _EventFailed as failure:
        again = DeadLetter(
            projection.name,
            halt.event,
            True,
            failure.error,
            failure.traceback,
            datetime.now(UTC),
            halt.attempts + 1,
            None,
        )

        def record(view: ViewTransaction) -> None:
            if view.get(tables.letters, halt.position) is not None:
                row = _letter_row(
                    halt.event, _HALTED, again.error, again.traceback, again.attempts, None
                )
                view.put(tables.letters, row)

        checkpoint = await read_store.checkpoint(projection.name)
        await read_store.apply(projection.name, checkpoint, checkpoint, record)
        return 0, [again]


async def _past_halt(
    read_store: ReadStore,
    projection: _Redeliverable,
    halt: DeadLetter,
    write: Callable[[ViewTransaction], None],
) -> bool:
    """Run ``write`` and move the checkpoint to the halted event, in one transaction, if the
    projection still stands right before it; False when it no longer does (another process
    retried it, or the projection got past it)."""
    tables = projection.dead_letters
    checkpoint = await read_store.checkpoint(projection.name)
    if checkpoint >= halt.position:
        return False

    def guarded(view: ViewTransaction) -> None:
        if view.get(tables.letters, halt.position) is None:
            raise _StreamChanged
        write(view)

    try:
        await read_store.apply(projection.name, checkpoint, halt.position, guarded)
    except (CheckpointMoved, _StreamChanged):
        return False
    return True
