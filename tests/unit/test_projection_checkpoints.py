"""A projection's checkpoint is exactly the position of the last event it applied.

One behind, a restarted runner applies that event again; one ahead, it skips the next one. Both
are told apart here in milliseconds, on the in-memory twins, by a projection that records every
position it is given and how many times.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from cqrskit import (
    Column,
    ColumnType,
    Event,
    EventCodec,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Table,
    ViewTransaction,
)
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore


class Noted(Event, frozen=True, kw_only=True):
    n: int


class Ignored(Event, frozen=True, kw_only=True):
    n: int


SEEN = Table(
    "seen",
    columns=(Column("position", ColumnType.INTEGER), Column("times", ColumnType.INTEGER)),
    key=("position",),
)
noting = Projection("noting", tables=[SEEN])
CODEC = EventCodec([Noted, Ignored])


@noting.on(Noted)
def _note(event: Noted, recorded: RecordedEvent, view: ViewTransaction) -> None:
    row = view.get(SEEN, recorded.position) or {"position": recorded.position, "times": 0}
    view.put(SEEN, {**row, "times": row["times"] + 1})


async def _append(
    store: InMemoryEventStore, stream: str, count: int, *, ignored: bool = False
) -> int:
    kind = Ignored if ignored else Noted
    events = [CODEC.new_event(kind(n=n)) for n in range(count)]
    return (await store.append(stream, events, None)).position


async def _applied(read: InMemoryReadStore) -> Counter[int]:
    return Counter({row["position"]: row["times"] for row in await read.find(SEEN)})


def _runner(
    events: InMemoryEventStore, read: InMemoryReadStore, batch_size: int
) -> ProjectionRunner:
    return ProjectionRunner(noting, events, read, CODEC, batch_size=batch_size)


async def test_catching_up_stores_the_last_applied_position_exactly() -> None:
    for batch_size in (1, 3, 1000):
        events, read = InMemoryEventStore(), InMemoryReadStore()
        head = await _append(events, "s", 7)
        runner = _runner(events, read, batch_size)
        await runner.setup()
        await runner.catch_up()
        assert await read.checkpoint(noting.name) == head == runner.status.position
        assert await _applied(read) == Counter(dict.fromkeys(range(1, head + 1), 1))


async def test_a_restarted_runner_applies_each_new_event_once_and_skips_none() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    await _append(events, "s", 5)
    first = _runner(events, read, batch_size=2)
    await first.setup()
    await first.catch_up()
    for round_ in range(3):  # a new process each time: it starts from the stored checkpoint
        head = await _append(events, f"s-{round_}", round_ + 1)
        restarted = _runner(events, read, batch_size=2)
        await restarted.setup()
        await restarted.catch_up()
        assert await read.checkpoint(noting.name) == head
        assert await _applied(read) == Counter(dict.fromkeys(range(1, head + 1), 1))


async def test_events_a_projection_ignores_still_move_its_checkpoint() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    await _append(events, "s", 2)
    head = await _append(events, "other", 3, ignored=True)
    runner = _runner(events, read, batch_size=10)
    await runner.setup()
    await runner.catch_up()
    assert await read.checkpoint(noting.name) == head == 5
    assert runner.status.events_applied == 2
    assert await _applied(read) == Counter({1: 1, 2: 1})


async def test_a_following_runner_checkpoints_every_live_batch_exactly() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    runner = _runner(events, read, batch_size=2)
    running = asyncio.create_task(runner.run())
    try:
        for count in (1, 2, 3):
            head = await _append(events, f"live-{count}", count)
            assert await runner.wait_for(head, timeout=30)
            assert await read.checkpoint(noting.name) == head == runner.status.position
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    head = await _append(events, "after", 2)
    restarted = _runner(events, read, batch_size=2)
    await restarted.setup()
    await restarted.catch_up()
    assert await _applied(read) == Counter(dict.fromkeys(range(1, head + 1), 1))
    assert restarted.status.events_applied == 2


async def test_a_rebuild_applies_every_event_once_and_ends_at_the_head() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    head = await _append(events, "s", 6)
    runner = _runner(events, read, batch_size=4)
    await runner.setup()
    await runner.catch_up()
    await runner.rebuild()
    assert await read.checkpoint(noting.name) == head
    assert runner.status.events_applied == head
    assert await _applied(read) == Counter(dict.fromkeys(range(1, head + 1), 1))


async def test_catching_up_goes_batch_by_batch_and_reports_each_checkpoint() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    head = await _append(events, "s", 7)
    runner = _runner(events, read, batch_size=3)
    await runner.setup()
    reported: list[int] = []

    async def on_batch(position: int) -> None:
        reported.append(position)
        assert await read.checkpoint(noting.name) == position  # already committed

    await runner.catch_up(on_batch)
    assert reported == [3, 6, head]


async def test_waiting_for_a_position_never_reached_returns_false_at_the_timeout() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    head = await _append(events, "s", 2)
    runner = _runner(events, read, batch_size=10)
    await runner.setup()
    async with asyncio.timeout(30):  # a broken timeout would wait for ever
        assert await runner.wait_for(head, timeout=0.05) is False
        await runner.catch_up()
        assert await runner.wait_for(head, timeout=0.05) is True
