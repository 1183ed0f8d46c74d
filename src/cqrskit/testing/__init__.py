"""Test helpers for applications built on cqrskit.

``DeciderSpec`` states business rules as given/when/then; ``UpcasterSpec`` states how events
stored in earlier shapes read today (given a stored payload, then this event); the
``*_contract`` modules are the
test suites every event-store and read-store backend must pass (``from
cqrskit.testing.event_store_contract import *`` in a test module of a suite that provides an
async ``backend`` fixture returning a :class:`cqrskit.backends.Backend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec

from cqrskit.codec import EventCodec
from cqrskit.decider import Decider
from cqrskit.messages import Event, RecordedEvent

__all__ = ["DeciderSpec", "UpcasterSpec"]

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")


class DeciderSpec(Generic[C, E, S]):
    """``DeciderSpec(decider).given(*events).when(command).then(*events)``.

    ``then`` asserts the events ``decide`` returns; ``then_raises`` asserts the error it raises
    (and returns it, for further checks). ``then_state`` asserts the state the events lead to.
    """

    def __init__(self, decider: Decider[C, E, S]) -> None:
        self._decider = decider
        self._history: tuple[E, ...] = ()
        self._command: C | None = None

    def given(self, *events: E) -> DeciderSpec[C, E, S]:
        spec = DeciderSpec(self._decider)
        spec._history = events
        return spec

    def when(self, command: C) -> DeciderSpec[C, E, S]:
        spec = DeciderSpec(self._decider)
        spec._history = self._history
        spec._command = command
        return spec

    def _decide(self) -> Sequence[E]:
        if self._command is None:
            raise AssertionError("call .when(command) before .then(...)")
        state = self._decider.fold(self._history)
        return self._decider.decide(self._command, state)

    def then(self, *expected: E) -> None:
        actual = tuple(self._decide())
        if actual != expected:
            raise AssertionError(f"expected events {list(expected)}, got {list(actual)}")

    def then_raises(self, error_type: type[BaseException]) -> Any:
        try:
            produced = self._decide()
        except error_type as error:
            return error
        raise AssertionError(f"expected {error_type.__name__}, got events {list(produced)}")

    def then_state(self, expected: S) -> None:
        state = self._decider.fold(self._history)
        if self._command is not None:
            state = self._decider.fold(self._decide(), state)
        if state != expected:
            raise AssertionError(f"expected state {expected!r}, got {state!r}")


class UpcasterSpec:
    """``UpcasterSpec(codec).given_stored("ItemAdded", 1, {...}).then(ItemsAdded(...))``.

    ``given_stored`` is an event as an earlier release stored it (type name, schema version,
    payload as a dict or as the stored JSON bytes); ``then`` asserts the event the codec reads
    it as, through the whole chain of upcasters, and that the upcast envelope names that
    event's current type and version; ``then_raises`` asserts the error reading it raises (and
    returns it).
    """

    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec
        self._stored: RecordedEvent | None = None

    def given_stored(
        self, event_type: str, schema_version: int, data: dict[str, Any] | bytes
    ) -> UpcasterSpec:
        spec = UpcasterSpec(self._codec)
        payload = data if isinstance(data, bytes) else msgspec.json.encode(data)
        spec._stored = RecordedEvent(
            event_id=UUID(int=1),
            stream_id="upcaster-spec",
            stream_version=1,
            position=1,
            recorded_at=datetime(2000, 1, 1, tzinfo=UTC),
            event_type=event_type,
            schema_version=schema_version,
            data=payload,
            metadata=b"{}",
        )
        return spec

    def _given(self) -> RecordedEvent:
        if self._stored is None:
            raise AssertionError("call .given_stored(type, version, data) before .then(...)")
        return self._stored

    def then(self, expected: Event) -> None:
        stored = self._given()
        current = self._codec.upcast(stored)
        shape = (current.event_type, current.schema_version)
        if shape != (expected.event_type, expected.schema_version):
            raise AssertionError(
                f"expected {stored.event_type} v{stored.schema_version} to read as "
                f"{expected.event_type} v{expected.schema_version}, got {shape[0]} v{shape[1]}"
            )
        actual = self._codec.decode(stored)
        if actual != expected:
            raise AssertionError(f"expected {expected!r}, got {actual!r}")

    def then_raises(self, error_type: type[BaseException]) -> Any:
        stored = self._given()
        try:
            event = self._codec.decode(stored)
        except error_type as error:
            return error
        raise AssertionError(f"expected {error_type.__name__}, got {event!r}")
