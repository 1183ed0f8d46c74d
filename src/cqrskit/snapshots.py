"""Snapshots: a long stream's state stored every N events, so loading it reads only the tail.

A snapshot is a cache, never a source of truth: it holds a decider's state at a stream version,
with the version of the state's shape. Loading a stream takes the newest usable snapshot and
folds the events after it; a snapshot whose shape no longer matches the decider's state (its
``state_version`` was bumped, or the state type's fields changed) is not used, so a changed
state never comes back wrong, only slower until the next snapshot is taken.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from cqrskit.errors import ConfigurationError

__all__ = ["Snapshot", "SnapshotPolicy", "SnapshotStore"]

S = TypeVar("S")


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A decider's state after ``stream_version`` events of ``stream_id``.

    ``kind`` names the state (one stream may be read by several deciders), ``state_version``
    and ``state_shape`` identify the shape it was encoded in; ``state`` is the encoded state.
    """

    stream_id: str
    kind: str
    state_version: int
    state_shape: str
    stream_version: int
    state: bytes
    taken_at: datetime


class SnapshotStore(Protocol):
    """Storage of snapshots: one per (stream, kind, state version), the newest."""

    async def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` in place of the one stored for the same stream, kind and state
        version, unless that one has the same shape and is at the same or a later stream
        version (a slower writer never replaces a newer snapshot; a snapshot of a changed
        state type replaces one the current code cannot use)."""
        ...

    async def load(self, stream_id: str, kind: str, state_version: int) -> Snapshot | None:
        """The stored snapshot of ``stream_id`` for ``kind`` at ``state_version``, if any."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class SnapshotPolicy(Generic[S]):
    """Snapshot a decider's state every ``every`` events (opt-in, per decider).

    ``state_type`` is the type of the decider's state, encoded as JSON by msgspec (a frozen
    ``msgspec.Struct`` or anything msgspec encodes and decodes). Bump ``state_version`` when
    the meaning of the state changes without its fields changing (``evolve`` fixed, say); a
    change of its fields is noticed on its own (``state_shape``, a hash of the type's JSON
    schema). ``kind`` defaults to the state type's name.

    Raises :class:`ConfigurationError` for ``every < 1`` or a type msgspec cannot describe.
    """

    state_type: type[S]
    every: int = 100
    state_version: int = 1
    kind: str = ""
    state_shape: str = field(init=False)
    _decoder: msgspec.json.Decoder[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigurationError(f"snapshots every {self.every} events: must be at least 1")
        try:
            schema = msgspec.json.encode(msgspec.json.schema(self.state_type), order="sorted")
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"cannot snapshot {self.state_type!r}: {error}") from error
        object.__setattr__(self, "state_shape", hashlib.sha256(schema).hexdigest()[:32])
        object.__setattr__(self, "kind", self.kind or getattr(self.state_type, "__name__", ""))
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.state_type))

    def encode(self, state: S) -> bytes:
        """``state`` as stored in a snapshot."""
        return _encoder.encode(state)

    def usable(self, snapshot: Snapshot) -> S | None:
        """The state held in ``snapshot`` when it was taken in this policy's shape, else None."""
        if (snapshot.kind, snapshot.state_version, snapshot.state_shape) != (
            self.kind,
            self.state_version,
            self.state_shape,
        ):
            return None
        try:
            state: S = self._decoder.decode(snapshot.state)
        except msgspec.DecodeError:
            return None
        return state


_encoder = msgspec.json.Encoder(decimal_format="string")
