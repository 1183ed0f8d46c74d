"""Encoding of events to JSON and back, by registered type name, upcasting older shapes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from cqrskit.errors import ConfigurationError, UndecodableEvent, UnknownEventType
from cqrskit.ids import uuid7
from cqrskit.messages import Event, Metadata, NewEvent, RecordedEvent
from cqrskit.upcasting import Upcaster, UpcasterChain

__all__ = ["EventCodec"]

_encoder = msgspec.json.Encoder(decimal_format="string")
# Upcasters see JSON numbers as Decimal and their output is written back digit for digit, so
# a payload's numbers never pass through a binary float on the way.
_payload_decoder = msgspec.json.Decoder(float_hook=Decimal)
_payload_encoder = msgspec.json.Encoder(decimal_format="number")


class EventCodec:
    """Turns domain events into :class:`NewEvent` and :class:`RecordedEvent` back into events.

    Every event class the application stores must be registered; a stored event whose type is
    not registered (and not renamed by an upcaster) raises :class:`UnknownEventType` when
    decoded. ``upcasters`` (see :mod:`cqrskit.upcasting`) read events stored in an earlier
    shape or under an earlier name as the current class; a stored shape that no chain of
    upcasters brings to a current one raises :class:`UndecodableEvent`. Raises
    :class:`ConfigurationError` for two classes under one name or an inconsistent chain.
    """

    def __init__(
        self, event_types: Iterable[type[Event]], *, upcasters: Iterable[Upcaster] = ()
    ) -> None:
        self._types: dict[str, type[Event]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        for event_type in event_types:
            name = event_type.event_type
            if name in self._types and self._types[name] is not event_type:
                raise ConfigurationError(f"two event classes are registered as {name!r}")
            self._types[name] = event_type
            self._decoders[name] = msgspec.json.Decoder(event_type)
        self._current = {name: cls.schema_version for name, cls in self._types.items()}
        self._chain = UpcasterChain(upcasters, self._current)

    def encode(self, event: Event) -> bytes:
        """The JSON payload of ``event``."""
        if event.event_type not in self._types:
            raise UnknownEventType(event.event_type)
        return _encoder.encode(event)

    def new_event(
        self,
        event: Event,
        *,
        recorded_at: datetime | None = None,
        metadata: Metadata | None = None,
        event_id: uuid.UUID | None = None,
    ) -> NewEvent:
        """Wrap ``event`` for :meth:`EventStore.append`, with a fresh event id by default."""
        return NewEvent(
            event_id=event_id or uuid7(),
            event_type=event.event_type,
            schema_version=event.schema_version,
            data=self.encode(event),
            metadata=_encoder.encode(metadata) if metadata else b"{}",
            recorded_at=recorded_at or datetime.now(UTC),
        )

    def decode(self, recorded: RecordedEvent) -> Event:
        """The domain event stored in ``recorded``, upcast to its class's current shape.

        Raises :class:`UnknownEventType` or :class:`UndecodableEvent`.
        """
        if self._current.get(recorded.event_type) != recorded.schema_version:
            recorded = self.upcast(recorded)
        try:
            event: Event = self._decoders[recorded.event_type].decode(recorded.data)
        except msgspec.DecodeError as error:  # ValidationError included
            raise _undecodable(recorded, f"payload does not fit the class: {error}") from error
        return event

    def upcast(self, recorded: RecordedEvent) -> RecordedEvent:
        """``recorded`` in the current shape of its event: type name, schema version and
        payload as the registered class has them now; the envelope (ids, stream, version,
        position, time, metadata) unchanged. An event stored in its current shape is returned
        as it is.

        Raises :class:`UnknownEventType` or :class:`UndecodableEvent`.
        """
        event_type, version = recorded.event_type, recorded.schema_version
        current = self._current.get(event_type)
        if current == version:
            return recorded
        path = self._chain.path(event_type, version)
        if path is None:
            if current is None:
                raise UnknownEventType(event_type)
            newer = "written by a newer release" if version > current else "no upcaster reaches"
            raise _undecodable(recorded, f"{newer} the current v{current}")
        try:
            data = _payload_decoder.decode(recorded.data)
            for step in path:
                data = step.transform(data)
            payload = _payload_encoder.encode(data)
        except Exception as error:
            step_names = " → ".join(f"{s.to_type} v{s.to_version}" for s in path)
            raise _undecodable(recorded, f"upcasting to {step_names} failed: {error!r}") from error
        last = path[-1]
        return msgspec.structs.replace(
            recorded, event_type=last.to_type, schema_version=last.to_version, data=payload
        )

    def read_as(self, event_type: str, schema_version: int) -> str:
        """The type name an event stored as (``event_type``, ``schema_version``) is read as,
        without decoding it (the same name when no upcaster renames it)."""
        if self._current.get(event_type) == schema_version or not self._chain:
            return event_type
        return self._chain.read_as(event_type, schema_version)


def _undecodable(recorded: RecordedEvent, reason: str) -> UndecodableEvent:
    return UndecodableEvent(
        recorded.event_type,
        recorded.schema_version,
        recorded.stream_id,
        recorded.stream_version,
        reason,
    )
