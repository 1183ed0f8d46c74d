"""Upcasting: reading events stored in an earlier shape, or under an earlier name, as today's.

Stored events are facts and are never rewritten. When an event class changes shape (its
``schema_version`` goes up) or is renamed, the application registers :class:`Upcaster` steps
with its :class:`~cqrskit.EventCodec`; every read that decodes an event (loading a stream for a
command, projections, subscriptions, the event log) then runs the stored payload through the
chain ``v1 → v2 → v3`` (and across renames) up to the class's current shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cqrskit.errors import ConfigurationError

__all__ = ["Payload", "Upcaster", "UpcasterChain", "rename"]

#: An event's payload as decoded JSON: what an upcaster takes and returns.
Payload = dict[str, Any]


def _unchanged(data: Payload) -> Payload:
    return data


@dataclass(frozen=True)
class Upcaster:
    """One step from a stored (``event_type``, ``schema_version``) to the next shape.

    ``transform`` turns the stored payload (decoded JSON) into the payload of (``to_type``,
    ``to_version``); it must be pure and deterministic, since it runs on every read. By default
    the type stays the same and the version goes up by one; a step that renames the type
    (``to_type``) lands on version 1 of the new name unless ``to_version`` says otherwise.
    Without ``transform`` the payload is kept as it is (a rename, or a version bump that only
    added fields with defaults).
    """

    event_type: str
    schema_version: int
    transform: Callable[[Payload], Payload] = _unchanged
    to_type: str = ""
    to_version: int = 0
    source: tuple[str, int] = field(init=False, repr=False)
    target: tuple[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        renamed = bool(self.to_type) and self.to_type != self.event_type
        to_type = self.to_type or self.event_type
        to_version = self.to_version or (1 if renamed else self.schema_version + 1)
        object.__setattr__(self, "to_type", to_type)
        object.__setattr__(self, "to_version", to_version)
        object.__setattr__(self, "source", (self.event_type, self.schema_version))
        object.__setattr__(self, "target", (to_type, to_version))
        if self.schema_version < 1 or to_version < 1:
            raise ConfigurationError(f"upcaster {self.source} → {self.target}: versions start at 1")


def rename(old_type: str, new_type: str, *, schema_version: int = 1) -> Upcaster:
    """The step that reads events stored as ``old_type`` (at ``schema_version``) as version 1
    of ``new_type``, payload unchanged."""
    return Upcaster(old_type, schema_version, to_type=new_type)


class UpcasterChain:
    """Every registered step, resolved once into the path each stored shape takes.

    ``current`` maps each registered event type name to its current schema version. Raises
    :class:`ConfigurationError` when two steps start from the same shape, a step starts from a
    current shape, or a path loops or ends anywhere but at a current shape.
    """

    def __init__(self, upcasters: Iterable[Upcaster], current: Mapping[str, int]) -> None:
        steps: dict[tuple[str, int], Upcaster] = {}
        for step in upcasters:
            if step.source in steps:
                raise ConfigurationError(f"two upcasters start from {_shape(step.source)}")
            if current.get(step.event_type) == step.schema_version:
                raise ConfigurationError(
                    f"upcaster from {_shape(step.source)}, which is the current shape"
                )
            steps[step.source] = step
        self._paths = {source: _path(source, steps, current) for source in steps}
        self._current = dict(current)

    def path(self, event_type: str, schema_version: int) -> tuple[Upcaster, ...] | None:
        """The steps from a stored shape to a current one; None when there is no path."""
        return self._paths.get((event_type, schema_version))

    def read_as(self, event_type: str, schema_version: int) -> str:
        """The type name an event stored as (``event_type``, ``schema_version``) is read as."""
        path = self._paths.get((event_type, schema_version))
        return path[-1].to_type if path else event_type

    def __bool__(self) -> bool:
        return bool(self._paths)


def _path(
    source: tuple[str, int], steps: Mapping[tuple[str, int], Upcaster], current: Mapping[str, int]
) -> tuple[Upcaster, ...]:
    path: list[Upcaster] = []
    shape = source
    while shape in steps:
        step = steps[shape]
        if step in path:
            raise ConfigurationError(f"upcasters from {_shape(source)} loop")
        path.append(step)
        shape = step.target
    if current.get(shape[0]) != shape[1]:
        raise ConfigurationError(
            f"upcasters from {_shape(source)} end at {_shape(shape)}, which is not the current "
            "shape of a registered event class"
        )
    return tuple(path)


def _shape(shape: tuple[str, int]) -> str:
    return f"{shape[0]} v{shape[1]}"
