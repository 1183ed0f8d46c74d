"""Test helpers for applications built on cqrskit.

``DeciderSpec`` states business rules as given/when/then; the ``*_contract`` modules are the
test suites every event-store and read-store backend must pass (``from
cqrskit.testing.event_store_contract import *`` in a test module of a suite that provides an
async ``backend`` fixture returning a :class:`cqrskit.backends.Backend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from cqrskit.decider import Decider

__all__ = ["DeciderSpec"]

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")


class DeciderSpec(Generic[C, E, S]):
    """``DeciderSpec(decider).given(*events).when(command).then(*events)``.

    ``then`` asserts the events ``decide`` returns; ``then_raises`` asserts the error it raises
    (and returns it, for further checks). ``then_state`` asserts the state the events lead to.
    """

    def __init__(self, decider: Decider[C, E, S]) -> None:
        self._decider = decider
        self._history: tuple[E, ...] = ()
        self._command: C | None = None

    def given(self, *events: E) -> DeciderSpec[C, E, S]:
        spec = DeciderSpec(self._decider)
        spec._history = events
        return spec

    def when(self, command: C) -> DeciderSpec[C, E, S]:
        spec = DeciderSpec(self._decider)
        spec._history = self._history
        spec._command = command
        return spec

    def _decide(self) -> Sequence[E]:
        if self._command is None:
            raise AssertionError("call .when(command) before .then(...)")
        state = self._decider.fold(self._history)
        return self._decider.decide(self._command, state)

    def then(self, *expected: E) -> None:
        actual = tuple(self._decide())
        if actual != expected:
            raise AssertionError(f"expected events {list(expected)}, got {list(actual)}")

    def then_raises(self, error_type: type[BaseException]) -> Any:
        try:
            produced = self._decide()
        except error_type as error:
            return error
        raise AssertionError(f"expected {error_type.__name__}, got events {list(produced)}")

    def then_state(self, expected: S) -> None:
        state = self._decider.fold(self._history)
        if self._command is not None:
            state = self._decider.fold(self._decide(), state)
        if state != expected:
            raise AssertionError(f"expected state {expected!r}, got {state!r}")
