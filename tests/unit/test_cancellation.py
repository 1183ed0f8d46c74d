"""A waiting coroutine that is cancelled ends cancelled, even when what it waits for arrives in
the same instant (Python 3.11's ``asyncio.wait_for`` swallowed such a cancellation: the runner
went on, and stopping the projections hung; ruff's TID251 now bans ``wait_for`` in src)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cqrskit import Column, ColumnType, Event, EventCodec, Projection, ProjectionRunner, Table
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from tests.support.waiting import DEADLINE


class Noted(Event, frozen=True):
    text: str


NOTES = Table("notes", columns=(Column("text", ColumnType.TEXT),), key=("text",))
notes = Projection("notes", tables=[NOTES])


@notes.on(Noted)
def _note(event: Noted, recorded: object, view: object) -> None:
    return None


async def test_a_wait_cancelled_as_the_batch_it_waits_for_lands_ends_cancelled() -> None:
    codec = EventCodec([Noted])
    store = InMemoryEventStore()
    now = datetime.now(UTC)
    await store.append("note-1", [codec.new_event(Noted(text="a"), recorded_at=now)], 0)
    runner = ProjectionRunner(notes, store, InMemoryReadStore(), codec)
    await runner.setup()
    waiting = asyncio.create_task(runner.wait_for(1_000_000, timeout=DEADLINE))
    for _ in range(3):  # let the waiter run up to its wait on the runner's progress
        await asyncio.sleep(0)

    async def cancel_the_wait(position: int) -> None:
        waiting.cancel()  # the same instant as the batch's wake-up

    await runner.catch_up(on_batch=cancel_the_wait)

    finished, _ = await asyncio.wait([waiting], timeout=DEADLINE)
    assert waiting in finished
    assert waiting.cancelled()
