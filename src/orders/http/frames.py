"""Stored events as JSON and as server-sent event frames, each encoded once for all clients."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cqrskit import RecordedEvent
from orders.http.sse import frame

__all__ = ["FrameCache", "event_json"]


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


_encode = msgspec.json.Encoder().encode


def event_json(event: RecordedEvent) -> bytes:
    """A stored event as one line of JSON (the payload is copied as stored, not re-encoded)."""
    data, metadata = event.data, event.metadata or b"{}"
    if b"\n" in data or b"\n" in metadata:  # a frame's data must be one line
        data, metadata = (_encode(msgspec.json.decode(raw)) for raw in (data, metadata))
    return _encode(
        _StoredEvent(
            event_id=str(event.event_id),
            stream_id=event.stream_id,
            version=event.stream_version,
            position=str(event.position),
            type=event.event_type,
            schema_version=event.schema_version,
            recorded_at=event.recorded_at,
            data=msgspec.Raw(data),
            metadata=msgspec.Raw(metadata),
        )
    )


class FrameCache:
    """Each event's frame encoded once for every client (the newest ``size`` are kept).

    Frames are named ``event_name``, or after the event's type when it is None.
    """

    def __init__(self, size: int = 50_000, event_name: str | None = None) -> None:
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
                encoded = frame(event_json(event), event=name, id=str(event.position))
                cache[event.position] = encoded
                if len(cache) > self.size:
                    del cache[next(iter(cache))]
            out.append(encoded)
        return b"".join(out)
