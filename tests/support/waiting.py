"""Waiting for a condition with a deadline: how tests wait, instead of sleeping.

A test states the condition it needs (an event committed, a subscriber idle, a request in
flight) and waits for it; the deadline is generous, because it is only reached when something
is wrong, and a busy machine must never make a correct program fail a test.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

#: Seconds a condition may take on a busy machine before the test fails.
DEADLINE = 60.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.005,
    what: str = "the condition",
) -> None:
    """Return as soon as ``condition()`` (sync or async) is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], bool],
    *,
    timeout: float = DEADLINE,
    interval: float = 0.005,
    what: str = "the condition",
) -> None:
    """The same for code that is not async (a thread, a test of subprocesses)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


async def turns_until(condition: Callable[[], bool], *, turns: int = 1_000) -> None:
    """Return as soon as ``condition()`` is true, yielding to the event loop between looks; fail
    after ``turns`` of them. For states other tasks reach without any I/O (a queue filled, a
    task done): the event loop's order decides, so a busy machine cannot change the outcome,
    and a bound in turns says "at once" where a deadline in seconds could not."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    if not condition():
        raise AssertionError(f"the condition was not met within {turns} event-loop turns")
