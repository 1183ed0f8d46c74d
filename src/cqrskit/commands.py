"""Command handling: load a stream's state, decide, append with optimistic concurrency."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from cqrskit import tracing
from cqrskit.codec import EventCodec
from cqrskit.decider import Decider
from cqrskit.errors import (
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    DuplicateIdempotencyKey,
    IdempotencyKeyReused,
    StreamNotFound,
    UnknownCommand,
)
from cqrskit.messages import Command, Event, Metadata
from cqrskit.snapshots import Snapshot, SnapshotPolicy, SnapshotStore
from cqrskit.store import EventStore, IdempotencyRecord, IdempotentResult

__all__ = ["CommandHandler", "CommandResult", "fingerprint"]

C = TypeVar("C", bound=Command)
S = TypeVar("S")

_fingerprint_encoder = msgspec.json.Encoder(decimal_format="string", order="deterministic")
log = logging.getLogger("cqrskit.commands")


@dataclass(frozen=True)
class CommandResult:
    """The outcome of a handled command.

    ``position`` is the global position of the command's last event (or of the stream's last
    event when the command changed nothing); wait for a projection to reach it to read your
    own write. ``replayed`` is true when an idempotency key matched an earlier command: its
    events were not appended again and ``events`` is empty.
    """

    stream_id: str
    version: int
    position: int
    events: tuple[Event, ...]
    replayed: bool = False


@dataclass(frozen=True)
class _Route(Generic[C, S]):
    decider: Decider[C, Any, S]
    stream_id: Callable[[C], str]
    creates_stream: bool


class CommandHandler:
    """Routes commands to deciders and appends their events.

    A command's stream is loaded (from a version-checked cache when possible), ``decide`` runs,
    and its events are appended with the loaded version as the expected version. On a
    :class:`ConcurrencyError` the stream is refreshed and the command decided again, up to
    ``max_retries`` times.

    With a ``snapshots`` store, deciders opted in with :meth:`enable_snapshots` load from their
    newest usable snapshot plus the events after it, and a snapshot is taken whenever a
    stream's version passes a multiple of the policy's ``every``.
    """

    def __init__(
        self,
        store: EventStore,
        codec: EventCodec,
        *,
        max_retries: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache_size: int = 10_000,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self._store = store
        self._codec = codec
        self._max_retries = max_retries
        self._clock = clock
        self._routes: dict[type[Command], _Route[Any, Any]] = {}
        self._cache: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._snapshots = snapshots
        self._policies: dict[int, tuple[Decider[Any, Any, Any], SnapshotPolicy[Any]]] = {}
        self.retries = 0  # concurrency retries so far, for metrics
        self.snapshots_taken = 0  # for metrics and tests

    def enable_snapshots(self, decider: Decider[Any, Any, S], policy: SnapshotPolicy[S]) -> None:
        """Snapshot the streams of ``decider`` as ``policy`` says (see :class:`SnapshotPolicy`).

        Raises :class:`ConfigurationError` when the handler has no snapshot store.
        """
        if self._snapshots is None:
            raise ConfigurationError("snapshots need a snapshot store: CommandHandler(snapshots=)")
        self._policies[id(decider)] = (decider, policy)

    def register(
        self,
        command_type: type[C],
        decider: Decider[C, Any, S],
        *,
        stream_id: Callable[[C], str],
        creates_stream: bool = False,
    ) -> None:
        """Send commands of ``command_type`` to ``decider``, on the stream ``stream_id(cmd)``.

        Unless ``creates_stream``, a command whose stream has no events raises
        :class:`StreamNotFound`.
        """
        self._routes[command_type] = _Route(decider, stream_id, creates_stream)

    async def handle(
        self,
        command: Command,
        *,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> CommandResult:
        """Handle ``command``; raise what ``decide`` raises, or a framework error.

        With ``idempotency_key``, a command already handled under that key is not run again:
        the first outcome is returned (``replayed=True``). The same key with a different
        command raises :class:`IdempotencyKeyReused`.
        """
        route = self._routes.get(type(command))
        if route is None:
            raise UnknownCommand(type(command).command_type)
        idempotency = None
        if idempotency_key is not None:
            idempotency = IdempotencyRecord(key=idempotency_key, fingerprint=fingerprint(command))
            earlier = await self._store.find_idempotent_result(idempotency_key)
            if earlier is not None:
                return _replay(earlier, idempotency, command)
        stream_id = route.stream_id(command)
        try:
            return await self._decide_and_append(route, command, stream_id, metadata, idempotency)
        except DuplicateIdempotencyKey:
            assert idempotency is not None
            earlier = await self._store.find_idempotent_result(idempotency.key)
            assert earlier is not None, "a duplicate key must be readable once committed"
            return _replay(earlier, idempotency, command)
        except (DomainError, ConcurrencyError):
            # A concurrent request with the same key may have committed after our first
            # look-up: our append then conflicts, or the refreshed state refuses the command
            # (e.g. "order already exists"). That is a retry of a success, not a failure.
            if idempotency is not None:
                earlier = await self._store.find_idempotent_result(idempotency.key)
                if earlier is not None:
                    return _replay(earlier, idempotency, command)
            raise

    async def _decide_and_append(
        self,
        route: _Route[Any, Any],
        command: Command,
        stream_id: str,
        metadata: Metadata | None,
        idempotency: IdempotencyRecord | None,
    ) -> CommandResult:
        if route.creates_stream and stream_id not in self._cache:
            # Most creating commands meet a new stream: skip the read and let the append's
            # version check (expected 0) prove it; an existing stream costs one retry.
            version, state = 0, route.decider.initial_state
        else:
            version, state = await self._load(route.decider, stream_id, refresh=False)
        for attempt in range(self._max_retries + 1):
            if version == 0 and not route.creates_stream:
                raise StreamNotFound(stream_id)
            events = tuple(route.decider.decide(command, state))
            if not events:
                position = await self._store.head_position()
                return CommandResult(stream_id, version, position, ())
            now = self._clock()
            try:
                with tracing.span("append", attributes={"cqrskit.stream_id": stream_id}):
                    # the events carry the append's trace context to the relay and projections
                    traced = tracing.with_trace_context(metadata)
                    new_events = [
                        self._codec.new_event(event, recorded_at=now, metadata=traced)
                        for event in events
                    ]
                    result = await self._store.append(
                        stream_id, new_events, version, idempotency=idempotency
                    )
            except ConcurrencyError:
                if attempt == self._max_retries:
                    self._cache.pop(stream_id, None)
                    raise
                self.retries += 1
                version, state = await self._load(route.decider, stream_id, refresh=True)
                continue
            new_state = route.decider.fold(events, state)
            self._remember(stream_id, result.version, new_state)
            await self._snapshot_if_due(
                route.decider, stream_id, version, result.version, new_state
            )
            return CommandResult(stream_id, result.version, result.position, events)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load(
        self, decider: Decider[Any, Any, Any], stream_id: str, *, refresh: bool
    ) -> tuple[int, Any]:
        """The stream's (version, state): cached, or caught up from the cached version."""
        cached = self._cache.get(stream_id)
        if cached is not None and not refresh:
            self._cache.move_to_end(stream_id)
            return cached
        if cached is not None:
            version, state = cached
        else:
            version, state = await self._from_snapshot(decider, stream_id)
        recorded = await self._store.read_stream(stream_id, from_version=version + 1)
        if recorded:
            base = version
            state = decider.fold((self._codec.decode(r) for r in recorded), state)
            version = recorded[-1].stream_version
            self._remember(stream_id, version, state)
            await self._snapshot_if_due(decider, stream_id, base, version, state)
        return version, state

    async def _from_snapshot(self, decider: Decider[Any, Any, S], stream_id: str) -> tuple[int, S]:
        """The newest usable snapshot's (version, state), else (0, the initial state)."""
        found = self._policies.get(id(decider))
        if found is None or self._snapshots is None:
            return 0, decider.initial_state
        policy = found[1]
        snapshot = await self._snapshots.load(stream_id, policy.kind, policy.state_version)
        state = None if snapshot is None else policy.usable(snapshot)
        if snapshot is None or state is None:
            return 0, decider.initial_state
        return snapshot.stream_version, state

    async def _snapshot_if_due(
        self, decider: Decider[Any, Any, S], stream_id: str, before: int, after: int, state: S
    ) -> None:
        """Take a snapshot when the version moved past a multiple of ``every`` (``before`` <
        k * every <= ``after``): a loaded stream of 10,000 events is snapshotted once, and a
        stream that grows one event a command every ``every`` commands."""
        found = self._policies.get(id(decider))
        if (
            found is None
            or self._snapshots is None
            or after // found[1].every <= before // found[1].every
        ):
            return
        policy = found[1]
        snapshot = Snapshot(
            stream_id=stream_id,
            kind=policy.kind,
            state_version=policy.state_version,
            state_shape=policy.state_shape,
            stream_version=after,
            state=policy.encode(state),
            taken_at=self._clock(),
        )
        try:
            await self._snapshots.save(snapshot)
        except Exception as error:  # the command has committed: a lost snapshot costs speed only
            log.warning("snapshot of %s at version %d not saved: %s", stream_id, after, error)
            return
        self.snapshots_taken += 1

    def _remember(self, stream_id: str, version: int, state: Any) -> None:
        self._cache[stream_id] = (version, state)
        self._cache.move_to_end(stream_id)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def load(self, decider: Decider[Any, Any, S], stream_id: str) -> tuple[int, S]:
        """The current (version, state) of a stream, read from the store."""
        version, state = await self._load(decider, stream_id, refresh=True)
        return version, state


def fingerprint(command: Command) -> str:
    """A stable hash of a command's type and fields, to recognise a repeated request."""
    return _hash(type(command).command_type, command)


def _hash(command_type: str, fields: msgspec.Struct) -> str:
    payload = _fingerprint_encoder.encode([command_type, fields])
    return hashlib.sha256(payload).hexdigest()


def _replay(
    earlier: IdempotentResult, request: IdempotencyRecord, command: Command
) -> CommandResult:
    if earlier.fingerprint != request.fingerprint and earlier.fingerprint not in {
        _hash(command_type, fields) for command_type, fields in command.earlier_forms()
    }:
        raise IdempotencyKeyReused(request.key)
    return CommandResult(earlier.stream_id, earlier.version, earlier.position, (), replayed=True)
