"""Scale-out over NATS JetStream (the ``cqrskit[nats]`` extra; nats-py is imported only here).

- :class:`JetStreamLog`: the event log in a JetStream stream (connection, stream, wire format).
- :class:`Relay`: publishes the event store's global log to the stream, in order, exactly as
  stored (the event store is the outbox).
- :class:`JetStreamSource`: an event source for :class:`~cqrskit.ProjectionRunner` that reads
  the stream (or one partition of it), filling any gap from the event store.

See ``docs/scale-out.md`` for the deployment and the guarantees, and
:mod:`cqrskit.nats._wire` for the message format other services consume.
"""

from cqrskit.nats._log import DEFAULT_PARTITIONS, DEFAULT_STREAM, JetStreamLog, StreamState
from cqrskit.nats._relay import Relay, RelayStatus
from cqrskit.nats._source import JetStreamSource
from cqrskit.nats._wire import Envelope, envelope_of, subject_for

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_STREAM",
    "Envelope",
    "JetStreamLog",
    "JetStreamSource",
    "Relay",
    "RelayStatus",
    "StreamState",
    "envelope_of",
    "subject_for",
]
