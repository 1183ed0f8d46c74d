"""The framework's own errors: adapters translate driver errors into these."""

from __future__ import annotations

__all__ = [
    "CheckpointMoved",
    "ConcurrencyError",
    "ConfigurationError",
    "CqrsKitError",
    "DomainError",
    "DuplicateIdempotencyKey",
    "IdempotencyKeyReused",
    "InvalidCommand",
    "ReadModelMismatch",
    "StoreUnavailable",
    "StreamNotFound",
    "TableMissing",
    "UndecodableEvent",
    "UnknownCommand",
    "UnknownEventType",
]


class CqrsKitError(Exception):
    """Base class of every error raised by cqrskit."""


class ConcurrencyError(CqrsKitError):
    """An append's expected version did not match the stream's current version."""

    def __init__(self, stream_id: str, expected_version: int | None, actual_version: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual_version}, "
            f"expected version {expected_version}"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class StreamNotFound(CqrsKitError):
    """A command addressed a stream that has no events."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} not found")
        self.stream_id = stream_id


class UnknownCommand(CqrsKitError):
    """No handler is registered for a command type."""

    def __init__(self, command_type: str) -> None:
        super().__init__(f"no handler registered for command {command_type!r}")
        self.command_type = command_type


class UnknownEventType(CqrsKitError):
    """A stored event's type name is not registered with the codec."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"event type {event_type!r} is not registered")
        self.event_type = event_type


class UndecodableEvent(CqrsKitError):
    """A stored event cannot be read as any current event: no upcaster reaches its shape (or
    it was written by a newer release), an upcaster failed, or its payload does not fit its
    class. ``reason`` says which."""

    def __init__(
        self, event_type: str, schema_version: int, stream_id: str, stream_version: int, reason: str
    ) -> None:
        super().__init__(
            f"event {event_type} v{schema_version} (stream {stream_id!r} version "
            f"{stream_version}) cannot be read: {reason}"
        )
        self.event_type = event_type
        self.schema_version = schema_version
        self.stream_id = stream_id
        self.stream_version = stream_version
        self.reason = reason


class DomainError(CqrsKitError):
    """A business rule rejected a command. Domains subclass this for each rule."""


class IdempotencyKeyReused(CqrsKitError):
    """An idempotency key was sent again with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request")
        self.key = key


class StoreUnavailable(CqrsKitError):
    """The backing database cannot be reached or refused the operation."""


class ConfigurationError(CqrsKitError):
    """Settings are invalid (for example, an unsupported store URL)."""


class DuplicateIdempotencyKey(CqrsKitError):
    """Raised by :meth:`EventStore.append` when the idempotency key is already stored."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} already stored")
        self.key = key


class InvalidCommand(CqrsKitError):
    """A command's fields are invalid whatever the state (a missing name, a negative price)."""


class CheckpointMoved(CqrsKitError):
    """A projection's checkpoint was not where the runner expected it (another runner moved it)."""

    def __init__(self, projection: str, expected: int, actual: int) -> None:
        super().__init__(
            f"checkpoint of projection {projection!r} is {actual}, expected {expected}"
        )
        self.projection = projection
        self.expected = expected
        self.actual = actual


class TableMissing(CqrsKitError):
    """A read-model table was read or written that does not exist: it was never set up
    (:meth:`ReadStore.setup`), or it was dropped (a retired projection version)."""

    def __init__(self, table: str) -> None:
        super().__init__(
            f"read-model table {table!r} does not exist: set it up first (ReadStore.setup),"
            " or rebuild the projection that owns it"
        )
        self.table = table


class ReadModelMismatch(CqrsKitError):
    """A projection's read model does not belong to the event store: it was built from another
    store, or its checkpoint is ahead of the store's head (the events were deleted or
    replaced). Its projection must not run, nor its tables be served, until it is rebuilt."""

    def __init__(self, projection: str, what: str, remedy: str) -> None:
        super().__init__(f"the read model of projection {projection!r} {what}: {remedy}")
        self.projection = projection
        self.what = what
