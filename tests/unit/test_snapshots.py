"""Snapshots through the public API, on the in-memory twins: when they are taken, when they are
used, and that a state loaded from one is always the state the events give."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrskit import (
    Command,
    CommandHandler,
    ConfigurationError,
    Decider,
    Event,
    EventCodec,
    RecordedEvent,
    StoreUnavailable,
)
from cqrskit.memory import InMemoryEventStore, InMemorySnapshotStore
from cqrskit.snapshots import Snapshot, SnapshotPolicy


class Add(Command, frozen=True, kw_only=True):
    stream: str
    amount: int


class Added(Event, frozen=True, kw_only=True):
    amount: int


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    count: int = 0
    total: int = 0


class TallyWithMax(msgspec.Struct, frozen=True, kw_only=True):
    count: int = 0
    total: int = 0
    largest: int = 0


def decide(command: Add, state: Tally) -> Sequence[Added]:
    return [Added(amount=command.amount)]


def evolve(state: Tally, event: Added) -> Tally:
    return Tally(count=state.count + 1, total=state.total + event.amount)


tally: Decider[Add, Added, Tally] = Decider(decide, evolve, Tally())
codec = EventCodec([Added])


class ReadCounting(InMemoryEventStore):
    """The in-memory store, noting where each stream read started."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        self.reads.append(from_version)
        return await super().read_stream(stream_id, from_version, limit)


def handler_on(
    store: InMemoryEventStore,
    snapshots: InMemorySnapshotStore | None,
    policy: SnapshotPolicy[Tally] | None = None,
) -> CommandHandler:
    handler = CommandHandler(store, codec, snapshots=snapshots, cache_size=0)
    handler.register(Add, tally, stream_id=lambda c: c.stream, creates_stream=True)
    if policy is not None:
        handler.enable_snapshots(tally, policy)
    return handler


async def append_events(store: InMemoryEventStore, amounts: Sequence[int]) -> None:
    version = await store.stream_version("s")
    await store.append("s", [codec.new_event(Added(amount=a)) for a in amounts], version)


async def test_given_a_long_stream_when_loaded_then_a_snapshot_is_taken_and_used_next_time() -> (
    None
):
    store, snapshots = ReadCounting(), InMemorySnapshotStore()
    await append_events(store, range(1, 251))
    policy = SnapshotPolicy(Tally, every=100)

    first = await handler_on(store, snapshots, policy).load(tally, "s")
    store.reads.clear()
    again = await handler_on(store, snapshots, policy).load(tally, "s")

    assert first == again == (250, Tally(count=250, total=31375))
    assert store.reads == [251]  # the snapshot at 250, then only what came after
    stored = await snapshots.load("s", "Tally", 1)
    assert stored is not None
    assert (stored.stream_version, stored.state_shape) == (250, policy.state_shape)


async def test_given_commands_then_a_snapshot_is_taken_each_time_the_version_passes_every() -> None:
    store, snapshots = InMemoryEventStore(), InMemorySnapshotStore()
    handler = handler_on(store, snapshots, SnapshotPolicy(Tally, every=10))

    for n in range(35):
        await handler.handle(Add(stream="s", amount=n))

    assert handler.snapshots_taken == 3
    stored = await snapshots.load("s", "Tally", 1)
    assert stored is not None
    assert stored.stream_version == 30
    assert msgspec.json.decode(stored.state, type=Tally) == Tally(count=30, total=435)


async def test_given_a_snapshot_of_another_state_shape_then_it_is_not_used() -> None:
    store, snapshots = ReadCounting(), InMemorySnapshotStore()
    await append_events(store, [5] * 20)
    await handler_on(store, snapshots, SnapshotPolicy(Tally, every=10)).load(tally, "s")
    store.reads.clear()

    # The state type gained a field (same name, same version): the old snapshot's shape differs.
    wider = CommandHandler(store, codec, snapshots=snapshots)
    wider_decider: Decider[Add, Added, TallyWithMax] = Decider(
        lambda c, s: [], lambda s, e: TallyWithMax(count=s.count + 1, total=s.total + e.amount,
        largest=max(s.largest, e.amount)), TallyWithMax(),
    )  # fmt: skip
    wider.enable_snapshots(wider_decider, SnapshotPolicy(TallyWithMax, every=10, kind="Tally"))

    loaded = await wider.load(wider_decider, "s")

    assert loaded == (20, TallyWithMax(count=20, total=100, largest=5))
    assert store.reads == [1]  # from the first event: the old snapshot was ignored


async def test_given_a_bumped_state_version_then_older_snapshots_are_not_used() -> None:
    store, snapshots = ReadCounting(), InMemorySnapshotStore()
    await append_events(store, [1] * 20)
    wrong = Snapshot(
        stream_id="s",
        kind="Tally",
        state_version=1,
        state_shape=SnapshotPolicy(Tally).state_shape,
        stream_version=20,
        state=b'{"count":999,"total":999}',  # what a buggy evolve of version 1 left behind
        taken_at=datetime.now(UTC),
    )
    await snapshots.save(wrong)
    store.reads.clear()

    loaded = await handler_on(store, snapshots, SnapshotPolicy(Tally, state_version=2)).load(
        tally, "s"
    )

    assert loaded == (20, Tally(count=20, total=20))
    assert store.reads == [1]


async def test_given_a_snapshot_that_cannot_be_decoded_then_the_events_are_folded_instead() -> None:
    store, snapshots = InMemoryEventStore(), InMemorySnapshotStore()
    await append_events(store, [2] * 12)
    policy = SnapshotPolicy(Tally, every=5)
    broken = Snapshot(
        stream_id="s",
        kind="Tally",
        state_version=1,
        state_shape=policy.state_shape,
        stream_version=12,
        state=b'{"count": "many"',
        taken_at=datetime.now(UTC),
    )
    await snapshots.save(broken)

    assert await handler_on(store, snapshots, policy).load(tally, "s") == (
        12,
        Tally(count=12, total=24),
    )


class FailingSnapshots(InMemorySnapshotStore):
    async def save(self, snapshot: Snapshot) -> None:
        raise StoreUnavailable("snapshot table is gone")


async def test_given_a_snapshot_that_cannot_be_saved_then_the_command_still_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryEventStore()
    handler = handler_on(store, FailingSnapshots(), SnapshotPolicy(Tally, every=1))

    with caplog.at_level(logging.WARNING, logger="cqrskit.commands"):
        result = await handler.handle(Add(stream="s", amount=3))

    assert (result.version, await store.stream_version("s")) == (1, 1)
    assert handler.snapshots_taken == 0
    assert "snapshot of s at version 1 not saved" in caplog.text


def test_snapshots_need_a_store_and_a_sensible_policy() -> None:
    with pytest.raises(ConfigurationError, match="snapshot store"):
        CommandHandler(InMemoryEventStore(), codec).enable_snapshots(tally, SnapshotPolicy(Tally))
    with pytest.raises(ConfigurationError, match="at least 1"):
        SnapshotPolicy(Tally, every=0)


@settings(max_examples=60, deadline=None)
@given(
    amounts=st.lists(st.integers(-1000, 1000), max_size=60),
    every=st.integers(1, 25),
    loads_after=st.lists(st.integers(0, 60), max_size=4),
)
def test_a_state_loaded_with_snapshots_always_equals_the_fold_of_every_event(
    amounts: list[int], every: int, loads_after: list[int]
) -> None:
    async def check() -> None:
        store, snapshots = InMemoryEventStore(), InMemorySnapshotStore()
        policy = SnapshotPolicy(Tally, every=every)
        written = 0
        for cut in sorted({min(n, len(amounts)) for n in loads_after} | {len(amounts)}):
            if cut > written:
                await append_events(store, amounts[written:cut])
                written = cut
            loaded = await handler_on(store, snapshots, policy).load(tally, "s")
            assert loaded == (written, tally.fold(Added(amount=a) for a in amounts[:written]))

    asyncio.run(check())
