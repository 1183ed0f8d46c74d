"""Stored events as JSON and as server-sent event frames, each encoded once for all clients."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from cqrskit import RecordedEvent
from orders.http.sse import frame

__all__ = ["FrameCache", "event_json"]


class _CurrentEvent(msgspec.Struct):
    type: str
    schema_version: int
    data: msgspec.Raw


class _StoredEvent(msgspec.Struct):
    event_id: str
    stream_id: str
    version: int
    position: str
    type: str
    schema_version: int
    recorded_at: datetime
    data: msgspec.Raw
    metadata: msgspec.Raw
    current: _CurrentEvent | None


_encode = msgspec.json.Encoder().encode


def _one_line(raw: bytes) -> msgspec.Raw:
    # A frame's data must be one line; what msgspec wrote is, anything else is re-encoded.
    return msgspec.Raw(_encode(msgspec.json.decode(raw)) if b"\n" in raw else raw)


def event_json(event: RecordedEvent, current: RecordedEvent | None) -> bytes:
    """A stored event as one line of JSON, with ``current``, the form this release reads it in
    (None: it cannot), as ``GET /orders/{id}/events`` shows it. Payloads are copied as stored,
    not re-encoded."""
    now = None
    if current is not None:
        now = _CurrentEvent(
            type=current.event_type,
            schema_version=current.schema_version,
            data=_one_line(current.data),
        )
    return _encode(
        _StoredEvent(
            event_id=str(event.event_id),
            stream_id=event.stream_id,
            version=event.stream_version,
            position=str(event.position),
            type=event.event_type,
            schema_version=event.schema_version,
            recorded_at=event.recorded_at,
            data=_one_line(event.data),
            metadata=_one_line(event.metadata or b"{}"),
            current=now,
        )
    )


class FrameCache:
    """Each event's frame encoded once for every client (the newest ``size`` are kept).

    Frames are named ``event_name``, or after the event's type when it is None;
    ``read_current`` gives an event's current form (see :func:`event_json`).
    """

    def __init__(
        self,
        read_current: Callable[[RecordedEvent], RecordedEvent | None],
        *,
        size: int = 50_000,
        event_name: str | None = None,
    ) -> None:
        self.read_current = read_current
        self.size = size
        self.event_name = event_name
        self._frames: dict[int, bytes] = {}

    def frames(self, events: list[RecordedEvent]) -> bytes:
        cache = self._frames
        out = []
        for event in events:
            encoded = cache.get(event.position)
            if encoded is None:
                name = self.event_name or event.event_type
                data = event_json(event, self.read_current(event))
                encoded = frame(data, event=name, id=str(event.position))
                cache[event.position] = encoded
                if len(cache) > self.size:
                    del cache[next(iter(cache))]
            out.append(encoded)
        return b"".join(out)
