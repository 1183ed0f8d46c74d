"""The decider: a stream's business rules as three pure functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Decider"]

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")


@dataclass(frozen=True)
class Decider(Generic[C, E, S]):
    """Business rules of one kind of stream, free of I/O.

    ``decide(command, state)`` returns the events a command produces (or raises a
    :class:`DomainError`); ``evolve(state, event)`` returns the state after an event;
    ``initial_state`` is the state of a stream with no events. States must be immutable:
    the command handler caches them.
    """

    decide: Callable[[C, S], Sequence[E]]
    evolve: Callable[[S, E], S]
    initial_state: S

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        """The state after ``events``, starting from ``state`` (default: the initial state)."""
        current = self.initial_state if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current
