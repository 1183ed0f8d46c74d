"""cqrskit: CQRS and event sourcing for Python.

The write side: :class:`Command`, :class:`Event`, :class:`Decider`, :class:`CommandHandler` and
an :class:`EventStore`. The read side: :class:`Projection`, :class:`ProjectionRunner`, a
:class:`ReadStore`, the :class:`Supervisor` that keeps runners running, and the
:class:`PartitionedWorker` that shares projections among processes. Backends live in
their own modules (``cqrskit.memory``, ``cqrskit.sqlite``, ``cqrskit.postgres``); open one by
URL with :func:`open_backend`.
"""

from cqrskit.backends import open_backend
from cqrskit.codec import EventCodec
from cqrskit.commands import CommandHandler, CommandResult
from cqrskit.deadletters import DeadLetter, ErrorPolicy, ProjectionHalted
from cqrskit.decider import Decider
from cqrskit.errors import (
    CheckpointMoved,
    ConcurrencyError,
    ConfigurationError,
    CqrsKitError,
    DomainError,
    DuplicateIdempotencyKey,
    IdempotencyKeyReused,
    InvalidCommand,
    ReadModelMismatch,
    StoreUnavailable,
    StreamNotFound,
    TableMissing,
    UndecodableEvent,
    UnknownCommand,
    UnknownEventType,
)
from cqrskit.messages import Command, Event, Metadata, NewEvent, RecordedEvent
from cqrskit.projections import LeasingReadStore, Projection, ProjectionRunner, ProjectionStatus
from cqrskit.readmodel import Column, ColumnType, ReadStore, Row, Table, ViewTransaction
from cqrskit.store import (
    ANY_VERSION,
    NO_STREAM,
    AppendResult,
    Backend,
    EventSource,
    EventStore,
    IdempotencyRecord,
    IdempotentResult,
)
from cqrskit.supervision import Backoff, ProjectionReport, ProjectionState, Supervisor
from cqrskit.upcasting import Upcaster
from cqrskit.versions import ProjectionVersions, ServingReadStore, VersionRole
from cqrskit.workers import PartitionedProgress, PartitionedWorker, WorkerGroups

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "AppendResult",
    "Backend",
    "Backoff",
    "CheckpointMoved",
    "Column",
    "ColumnType",
    "Command",
    "CommandHandler",
    "CommandResult",
    "ConcurrencyError",
    "ConfigurationError",
    "CqrsKitError",
    "DeadLetter",
    "Decider",
    "DomainError",
    "DuplicateIdempotencyKey",
    "ErrorPolicy",
    "Event",
    "EventCodec",
    "EventSource",
    "EventStore",
    "IdempotencyKeyReused",
    "IdempotencyRecord",
    "IdempotentResult",
    "InvalidCommand",
    "LeasingReadStore",
    "Metadata",
    "NewEvent",
    "PartitionedProgress",
    "PartitionedWorker",
    "Projection",
    "ProjectionHalted",
    "ProjectionReport",
    "ProjectionRunner",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionVersions",
    "ReadModelMismatch",
    "ReadStore",
    "RecordedEvent",
    "Row",
    "ServingReadStore",
    "StoreUnavailable",
    "StreamNotFound",
    "Supervisor",
    "Table",
    "TableMissing",
    "UndecodableEvent",
    "UnknownCommand",
    "UnknownEventType",
    "Upcaster",
    "VersionRole",
    "ViewTransaction",
    "WorkerGroups",
    "open_backend",
]
