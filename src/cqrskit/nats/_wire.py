"""How an event travels as a JetStream message: its subject, its headers, its payload.

Pure functions on plain values, so that the format is tested without a server and documented
in one place (``docs/scale-out.md`` repeats it for other teams).

Subject: ``<stream>.<partition>.<category>.<event type>``, e.g. ``orders.7.order.OrderCreated``,
so that a consumer can filter by partition (``orders.7.>``), stream category
(``orders.*.order.>``) or event type (``orders.*.*.OrderSubmitted``). The category is the stream
id up to its first ``-`` (``order-ORD-1`` → ``order``). Characters a subject token cannot hold
become ``_``.

Payload: the event's JSON, byte for byte as stored. Headers: ``Nats-Msg-Id`` (the event id:
JetStream drops a duplicate publish), the position, the previous positions (see below), stream
id and version, type, schema version, recording time and metadata, and the W3C trace context.

``Cqrskit-Previous`` is the position of the event just before this one in the global order (0
for the first), and ``Cqrskit-Partition-Previous`` the position of the one before it in the same
partition (absent when the relay does not know it). A consumer that has applied everything up
to position P and receives a message whose previous is not P knows for certain that it missed
events, and which: it reads them from the event store (see :mod:`cqrskit.nats._source`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime

import msgspec

from cqrskit.errors import ConfigurationError
from cqrskit.messages import Metadata, RecordedEvent
from cqrskit.partitions import partition_of

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
POSITION = "Cqrskit-Position"
PREVIOUS = "Cqrskit-Previous"
PARTITION_PREVIOUS = "Cqrskit-Partition-Previous"
STREAM_ID = "Cqrskit-Stream-Id"
STREAM_VERSION = "Cqrskit-Stream-Version"
EVENT_TYPE = "Cqrskit-Event-Type"
SCHEMA_VERSION = "Cqrskit-Schema-Version"
RECORDED_AT = "Cqrskit-Recorded-At"
METADATA = "Cqrskit-Metadata"
TRACE_HEADERS = ("traceparent", "tracestate")

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_PARTITIONS_NOTE = re.compile(r"partitions=(\d+)")
_metadata_decoder = msgspec.json.Decoder(Metadata)
_encoder = msgspec.json.Encoder()


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read from JetStream: the event and where it sits in the log."""

    event: RecordedEvent
    #: position of the previous event in the global order (0: none)
    previous: int
    #: position of the previous event of the same partition (0: none, None: unknown)
    partition_previous: int | None
    #: the message's JetStream stream sequence
    sequence: int


def check_stream_name(name: str) -> str:
    """``name`` if JetStream accepts it as a stream name and subject token, else raise."""
    if not _STREAM_NAME.fullmatch(name):
        raise ConfigurationError(
            f"JetStream stream name {name!r} must be 1 to 64 letters, digits, '_' or '-'"
        )
    return name


def token(text: str) -> str:
    """``text`` as one subject token: characters a token cannot hold become ``_``."""
    return _UNSAFE.sub("_", text) or "_"


def category_of(stream_id: str) -> str:
    """The stream category: the stream id up to its first ``-`` (all of it if none)."""
    return stream_id.split("-", 1)[0]


def subject_for(stream: str, partitions: int, event: RecordedEvent) -> str:
    """The subject ``event`` is published on in JetStream stream ``stream``."""
    partition = partition_of(event.stream_id, partitions)
    return f"{stream}.{partition}.{token(category_of(event.stream_id))}.{token(event.event_type)}"


def partition_subject(stream: str, partition: int) -> str:
    """The filter subject of every event of ``partition``."""
    return f"{stream}.{partition}.>"


def all_subjects(stream: str) -> str:
    """The filter subject of every event of the stream."""
    return f"{stream}.>"


def describe(partitions: int) -> str:
    """The stream's description, which records its partition count for every consumer."""
    return f"cqrskit event log; partitions={partitions}"


def partitions_in(description: str | None) -> int | None:
    """The partition count recorded in a stream's description, if any."""
    found = _PARTITIONS_NOTE.search(description or "")
    return int(found.group(1)) if found else None


def headers_for(
    event: RecordedEvent,
    previous: int,
    partition_previous: int | None,
    trace: Mapping[str, str],
) -> dict[str, str]:
    """The headers of ``event``'s message (``trace``: W3C ``traceparent``/``tracestate``)."""
    headers = {
        MSG_ID: str(event.event_id),
        POSITION: str(event.position),
        PREVIOUS: str(previous),
        STREAM_ID: event.stream_id,
        STREAM_VERSION: str(event.stream_version),
        EVENT_TYPE: event.event_type,
        SCHEMA_VERSION: str(event.schema_version),
        RECORDED_AT: event.recorded_at.isoformat(),
    }
    if partition_previous is not None:
        headers[PARTITION_PREVIOUS] = str(partition_previous)
    if event.metadata not in (b"", b"{}"):
        headers[METADATA] = event.metadata.decode()
    headers.update({name: trace[name] for name in TRACE_HEADERS if name in trace})
    return headers


def position_in(headers: Mapping[str, str] | None) -> int:
    """The event position a message's headers carry; raise :class:`ValueError` if none."""
    if not headers or POSITION not in headers:
        raise ValueError("not a cqrskit event message: no Cqrskit-Position header")
    return int(headers[POSITION])


def envelope_of(headers: Mapping[str, str] | None, data: bytes, sequence: int) -> Envelope:
    """The event a message carries; raise :class:`ValueError` if it is not a cqrskit event."""
    if not headers:
        raise ValueError("not a cqrskit event message: no headers")
    try:
        event = RecordedEvent(
            event_id=uuid.UUID(headers[MSG_ID]),
            stream_id=headers[STREAM_ID],
            stream_version=int(headers[STREAM_VERSION]),
            position=int(headers[POSITION]),
            recorded_at=datetime.fromisoformat(headers[RECORDED_AT]),
            event_type=headers[EVENT_TYPE],
            schema_version=int(headers[SCHEMA_VERSION]),
            data=data,
            metadata=_metadata_with_trace(headers),
        )
        partition_previous = headers.get(PARTITION_PREVIOUS)
        return Envelope(
            event=event,
            previous=int(headers[PREVIOUS]),
            partition_previous=None if partition_previous is None else int(partition_previous),
            sequence=sequence,
        )
    except KeyError as missing:
        raise ValueError(f"not a cqrskit event message: no {missing} header") from None


def _metadata_with_trace(headers: Mapping[str, str]) -> bytes:
    """The event's metadata, its trace context replaced by the message's (the relay's span), so
    that a consumer's spans follow on from the publish."""
    stored = headers.get(METADATA, "{}").encode()
    trace = trace_context_of(headers)
    if not trace:
        return stored
    metadata = _metadata_decoder.decode(stored)
    extra = {key: value for key, value in metadata.extra.items() if key not in TRACE_HEADERS}
    return _encoder.encode(
        Metadata(
            correlation_id=metadata.correlation_id,
            causation_id=metadata.causation_id,
            extra={**extra, **trace},
        )
    )


def trace_context_of(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The W3C trace context in a message's headers."""
    return {name: headers[name] for name in TRACE_HEADERS if headers and name in headers}
