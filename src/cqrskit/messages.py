"""Commands, events and their stored envelopes.

Domain messages are immutable ``msgspec`` structs. Events are stored under a type name (the class
name unless ``event_type`` is set), never under a Python module path, so classes can move freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import msgspec

__all__ = [
    "Command",
    "Event",
    "Metadata",
    "NewEvent",
    "RecordedEvent",
]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base class of commands: an intent to change one stream, named in the imperative."""

    command_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "command_type" not in cls.__dict__:
            cls.command_type = cls.__name__

    def earlier_forms(self) -> Sequence[tuple[str, msgspec.Struct]]:
        """This same request as earlier releases expressed it: (command type name, fields as
        a struct shaped like the old command class) pairs; none by default.

        An idempotency key is stored with a fingerprint of the command it was first used
        with (:func:`cqrskit.commands.fingerprint`). When a command changes shape, a key
        stored by the previous release must still match its retry: override this to return
        the old form(s) of the request, and a stored fingerprint of any of them replays.
        """
        return ()


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base class of domain events: a fact, named in the past tense.

    ``event_type`` is the name the event is stored under (default: the class name) and
    ``schema_version`` the version of its payload's shape.
    """

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "event_type" not in cls.__dict__:
            cls.event_type = cls.__name__


class Metadata(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What is known about why an event happened: correlation and causation ids."""

    correlation_id: str | None = None
    causation_id: str | None = None
    extra: dict[str, str] = {}


_metadata_decoder = msgspec.json.Decoder(Metadata)
_EMPTY_METADATA = Metadata()


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An encoded event on its way into the store (see :class:`cqrskit.EventCodec`)."""

    event_id: UUID
    event_type: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: datetime


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored: its payload (encoded) and everything the store knows about it.

    ``stream_version`` starts at 1 in each stream. ``position`` is the event's place in the
    global order: strictly increasing in the order :meth:`EventStore.read_all` returns events,
    but not necessarily dense (some backends leave gaps).
    """

    event_id: UUID
    stream_id: str
    stream_version: int
    position: int
    recorded_at: datetime
    event_type: str
    schema_version: int
    data: bytes
    metadata: bytes

    @property
    def meta(self) -> Metadata:
        """The decoded :class:`Metadata` of this event."""
        if self.metadata in (b"", b"{}"):
            return _EMPTY_METADATA
        return _metadata_decoder.decode(self.metadata)
