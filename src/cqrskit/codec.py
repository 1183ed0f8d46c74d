"""Encoding of events to JSON and back, by registered type name."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from cqrskit.errors import ConfigurationError, UnknownEventType
from cqrskit.ids import uuid7
from cqrskit.messages import Event, Metadata, NewEvent, RecordedEvent

__all__ = ["EventCodec"]

_encoder = msgspec.json.Encoder(decimal_format="string")


class EventCodec:
    """Turns domain events into :class:`NewEvent` and :class:`RecordedEvent` back into events.

    Every event class the application stores must be registered; a stored event whose type is
    not registered raises :class:`UnknownEventType` when decoded.
    """

    def __init__(self, event_types: Iterable[type[Event]]) -> None:
        self._types: dict[str, type[Event]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        for event_type in event_types:
            name = event_type.event_type
            if name in self._types and self._types[name] is not event_type:
                raise ConfigurationError(f"two event classes are registered as {name!r}")
            self._types[name] = event_type
            self._decoders[name] = msgspec.json.Decoder(event_type)

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
        """The domain event stored in ``recorded``."""
        decoder = self._decoders.get(recorded.event_type)
        if decoder is None:
            raise UnknownEventType(recorded.event_type)
        event: Event = decoder.decode(recorded.data)
        return event
