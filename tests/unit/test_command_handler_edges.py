"""The command handler's edges: no-event decisions, the cache, the retry schedule, racing
idempotency keys, snapshots beside other deciders (tests written against surviving mutants)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

import cqrskit.commands
from cqrskit import (
    Command,
    CommandHandler,
    ConcurrencyError,
    ConfigurationError,
    Decider,
    DomainError,
    Event,
    EventCodec,
    IdempotencyKeyReused,
    StoreUnavailable,
)
from cqrskit.memory import InMemoryEventStore, InMemorySnapshotStore
from cqrskit.snapshots import Snapshot, SnapshotPolicy
from cqrskit.store import IdempotentResult
from tests.support.flaky import FlakyEventStore
from tests.support.waiting import turns_until


class Count(msgspec.Struct, frozen=True):
    value: int = 0
    started: bool = False


class Started(Event, frozen=True):
    counter: str


class Added(Event, frozen=True):
    counter: str
    amount: int


class Start(Command, frozen=True):
    counter: str


class Add(Command, frozen=True):
    counter: str
    amount: int


class Subtract(Command, frozen=True):
    """Same fields as :class:`Add`: only the command type tells them apart."""

    counter: str
    amount: int


class Settle(Command, frozen=True):
    """Creates the counter; does nothing to a counter that is still at zero."""

    counter: str


class Peek(Command, frozen=True):
    """Decides nothing: no events, whatever the state."""

    counter: str


class WouldGoNegative(DomainError):
    pass


def decide(command: Any, state: Count) -> Sequence[Event]:
    if isinstance(command, Start):
        return [Started(counter=command.counter)]
    if isinstance(command, Add):
        return [Added(counter=command.counter, amount=command.amount)]
    if isinstance(command, Subtract):
        if state.value < command.amount:
            raise WouldGoNegative(f"{command.counter} is at {state.value}")
        return [Added(counter=command.counter, amount=-command.amount)]
    if isinstance(command, Settle):
        return [] if state.value == 0 else [Added(counter=command.counter, amount=-state.value)]
    return []


def evolve(state: Count, event: Any) -> Count:
    if isinstance(event, Started):
        return Count(state.value, started=True)
    return Count(state.value + event.amount, state.started)


counter = Decider(decide=decide, evolve=evolve, initial_state=Count())
other = Decider(decide=decide, evolve=evolve, initial_state=Count())
CODEC = EventCodec([Started, Added])


def handler_on(store: Any, **options: Any) -> CommandHandler:
    handler = CommandHandler(store, CODEC, **options)
    handler.register(Start, counter, stream_id=lambda c: c.counter, creates_stream=True)
    handler.register(Settle, counter, stream_id=lambda c: c.counter, creates_stream=True)
    for command_type in (Add, Subtract, Peek):
        handler.register(command_type, counter, stream_id=lambda c: c.counter)
    return handler


class CountingStore(InMemoryEventStore):
    """Counts the store calls a handler makes, per operation and stream."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Tally[tuple[str, str]] = Tally()

    async def read_stream(self, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        self.calls["read_stream", stream_id] += 1
        return await super().read_stream(stream_id, *args, **kwargs)

    async def append(self, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        self.calls["append", stream_id] += 1
        return await super().append(stream_id, *args, **kwargs)


# -- decisions without events --


async def test_a_decision_without_events_answers_the_stream_version_and_the_head() -> None:
    store = InMemoryEventStore()
    handler = handler_on(store)
    await handler.handle(Start(counter="a"))
    await handler.handle(Add(counter="a", amount=2))
    await handler.handle(Start(counter="b"))

    result = await handler.handle(Peek(counter="a"))

    assert (result.stream_id, result.version, result.position, result.events) == ("a", 2, 3, ())
    assert await store.head_position() == 3


async def test_a_creating_command_on_a_new_stream_does_not_read_it_first() -> None:
    store = CountingStore()

    await handler_on(store).handle(Start(counter="a"))

    assert store.calls == {("append", "a"): 1}


async def test_a_creating_command_deciding_nothing_from_the_assumed_empty_stream_reads_it() -> None:
    # given a counter another process started and added to
    store = InMemoryEventStore()
    await handler_on(store).handle(Start(counter="a"))
    await handler_on(store).handle(Add(counter="a", amount=5))

    # when a handler that never saw it settles it (nothing to settle, were it new)
    result = await handler_on(store).handle(Settle(counter="a"))

    # then the "nothing to do" was checked against the stored stream, and was wrong
    assert result.version == 3
    assert [type(e).__name__ for e in result.events] == ["Added"]


# -- the cache --


async def test_a_stream_read_for_a_refused_command_serves_the_next_command_from_the_cache() -> None:
    store = CountingStore()
    await handler_on(store).handle(Start(counter="a"))
    handler = handler_on(store)

    with pytest.raises(WouldGoNegative):
        await handler.handle(Subtract(counter="a", amount=1))  # read, refused, cached
    reads = store.calls["read_stream", "a"]
    result = await handler.handle(Subtract(counter="a", amount=0))  # decided on the cached state

    assert store.calls["read_stream", "a"] == reads
    assert result.version == 2


async def test_load_reads_the_store_even_when_the_stream_is_cached() -> None:
    store = InMemoryEventStore()
    handler = handler_on(store)
    await handler.handle(Start(counter="a"))
    await handler_on(store).handle(Add(counter="a", amount=4))  # behind the first's cache

    assert await handler.load(counter, "a") == (2, Count(4, started=True))


async def test_the_cache_keeps_the_most_recently_used_streams() -> None:
    store = CountingStore()
    writer = handler_on(store)
    for name in ("a", "b", "c"):
        await writer.handle(Start(counter=name))
    handler = handler_on(store, cache_size=2)
    for name in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        await handler.handle(Add(counter=name, amount=1))
    store.calls.clear()

    for name in ("a", "c", "b"):
        await handler.handle(Add(counter=name, amount=1))

    assert store.calls["read_stream", "a"] == store.calls["read_stream", "c"] == 0
    assert store.calls["read_stream", "b"] == 1


async def test_the_cache_holds_ten_thousand_streams_by_default() -> None:
    store = CountingStore()
    handler = handler_on(store)
    for number in range(10_000):
        await handler.handle(Start(counter=f"c{number}"))
    store.calls.clear()

    await handler.handle(Add(counter="c0", amount=1))  # the oldest of 10,000: still cached
    assert store.calls["read_stream", "c0"] == 0
    await handler.handle(Start(counter="c10000"))  # the 10,001st pushes out the oldest: c1
    await handler.handle(Add(counter="c1", amount=1))
    assert store.calls["read_stream", "c1"] == 1


async def test_a_creating_command_on_a_stream_that_exists_is_a_conflict_without_retries() -> None:
    store = InMemoryEventStore()
    await handler_on(store).handle(Start(counter="a"))

    with pytest.raises(ConcurrencyError):
        await handler_on(store, max_retries=0).handle(Start(counter="a"))


async def test_after_giving_up_on_conflicts_the_stream_is_read_again() -> None:
    store = FlakyEventStore(CountingStore())
    handler = handler_on(store, max_retries=1)
    await handler.handle(Start(counter="a"))
    store.only, store.failure = {"append"}, ConcurrencyError("a", 1, 2)
    with pytest.raises(ConcurrencyError):
        await handler.handle(Add(counter="a", amount=1))
    store.failure = None
    store.inner.calls.clear()

    await handler.handle(Add(counter="a", amount=1))

    assert store.inner.calls["read_stream", "a"] == 1


async def test_commands_that_keep_arriving_for_one_stream_still_take_turns() -> None:
    # given appends slow enough that later commands arrive while earlier ones wait
    store = InMemoryEventStore()
    inner_append = store.append

    async def slow_append(*args: Any, **kwargs: Any) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        return await inner_append(*args, **kwargs)

    store.append = slow_append  # type: ignore[method-assign]
    handler = handler_on(store, max_retries=0)
    await handler.handle(Start(counter="a"))

    # when commands keep arriving, now while several wait, now while one is in flight
    tasks = []
    for arrival in range(30):
        tasks.append(asyncio.create_task(handler.handle(Add(counter="a", amount=1))))
        for _ in range(arrival % 6):
            await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)

    # then no two ever raced each other, and no stream's turn is kept once all are done
    assert sorted(r.version for r in results) == list(range(2, 32))
    assert handler.retries == 0
    assert handler._turns == {}  # a turn per stream ever seen would be a leak


async def test_a_command_arriving_while_one_waits_its_turn_waits_too() -> None:
    # given appends that wait for the test's word, one gate per append
    store = InMemoryEventStore()
    inner_append, gates = store.append, [asyncio.Event() for _ in range(4)]
    entered: list[int] = []

    async def gated_append(*args: Any, **kwargs: Any) -> Any:
        number = len(entered)
        entered.append(number)
        await gates[number].wait()
        return await inner_append(*args, **kwargs)

    handler = handler_on(store, max_retries=0)
    gates[0].set()
    await handler.handle(Start(counter="a"))
    store.append = gated_append  # type: ignore[method-assign]

    # when A appends, B waits; A finishes and B appends; then C arrives
    del entered[:]
    gates = [*gates[1:], asyncio.Event()]
    first = asyncio.create_task(handler.handle(Add(counter="a", amount=1)))
    await turns_until(lambda: len(entered) == 1)
    second = asyncio.create_task(handler.handle(Add(counter="a", amount=1)))
    await asyncio.sleep(0)
    gates[0].set()
    await turns_until(lambda: first.done() and len(entered) == 2)
    third = asyncio.create_task(handler.handle(Add(counter="a", amount=1)))
    for _ in range(20):
        await asyncio.sleep(0)
    gates[1].set()
    gates[2].set()

    # then C took its turn after B: no conflict, versions in order
    results = await asyncio.gather(first, second, third)
    assert [r.version for r in results] == [2, 3, 4]


# -- conflicts: how often, how long, how the pauses grow --


async def test_by_default_a_conflict_is_retried_ten_times() -> None:
    store = FlakyEventStore(InMemoryEventStore())
    handler = handler_on(store)
    await handler.handle(Start(counter="a"))
    store.only, store.failure = {"append"}, ConcurrencyError("a", 1, 2)

    with pytest.raises(ConcurrencyError):
        await handler.handle(Add(counter="a", amount=1))

    assert store.failed == 11


async def test_by_default_conflicts_are_retried_for_two_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a clock that moves half a second with every refused append
    now = [1000.0]
    monkeypatch.setattr(cqrskit.commands, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = FlakyEventStore(InMemoryEventStore())
    handler = handler_on(store, max_retries=1_000)
    await handler.handle(Start(counter="a"))
    inner_append = store.inner.append

    async def refused(*args: Any, **kwargs: Any) -> Any:
        now[0] += 0.5
        raise ConcurrencyError("a", 1, 2)

    store.inner.append = refused  # type: ignore[method-assign]

    with pytest.raises(ConcurrencyError):
        await handler.handle(Add(counter="a", amount=1))

    # then the fourth refusal, two seconds after the first attempt, ends it
    assert handler.retries == 3
    store.inner.append = inner_append  # type: ignore[method-assign]


async def test_the_pause_between_retries_doubles_from_two_milliseconds_to_fifty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        pauses.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(cqrskit.commands, "random", SimpleNamespace(uniform=lambda a, b: b))
    monkeypatch.setattr(cqrskit.commands, "asyncio", SimpleNamespace(sleep=record))
    store = FlakyEventStore(InMemoryEventStore())
    handler = handler_on(store, max_retries=8, retry_time=60.0)
    await handler.handle(Start(counter="a"))
    store.only, store.failure = {"append"}, ConcurrencyError("a", 1, 2)

    with pytest.raises(ConcurrencyError):
        await handler.handle(Add(counter="a", amount=1))

    assert pauses == pytest.approx([0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05, 0.05])


# -- idempotency keys --


async def test_each_key_is_stored_as_its_own_and_replays_its_own_outcome() -> None:
    store = InMemoryEventStore()
    handler = handler_on(store)
    first = await handler.handle(Start(counter="a"), idempotency_key="k-a")
    second = await handler.handle(Start(counter="b"), idempotency_key="k-b")

    again = await handler.handle(Start(counter="a"), idempotency_key="k-a")

    assert not first.replayed
    assert not second.replayed
    found = await store.find_idempotent_result("k-a")
    assert found is not None
    assert found.stream_id == "a"
    assert (again.stream_id, again.version, again.position, again.events) == ("a", 1, 1, ())
    assert again.replayed


async def test_a_replayed_key_never_reaches_the_append() -> None:
    store = CountingStore()
    handler = handler_on(store)
    await handler.handle(Start(counter="a"))
    await handler.handle(Add(counter="a", amount=1), idempotency_key="k")

    await handler.handle(Add(counter="a", amount=1), idempotency_key="k")

    assert store.calls["append", "a"] == 2  # the start and the first add


async def test_a_key_reused_for_another_command_type_with_the_same_fields_is_refused() -> None:
    handler = handler_on(InMemoryEventStore())
    await handler.handle(Start(counter="a"))
    await handler.handle(Add(counter="a", amount=1), idempotency_key="k-1")

    with pytest.raises(IdempotencyKeyReused, match="idempotency key 'k-1' was already used"):
        await handler.handle(Subtract(counter="a", amount=1), idempotency_key="k-1")


class KeyCommittedMeanwhile(InMemoryEventStore):
    """The first look-up of a key after it was committed misses, as a request in another
    process would if it looked just before the commit."""

    def __init__(self, readable: bool = True) -> None:
        super().__init__()
        self.readable = readable
        self.unseen: set[str] = set()

    async def append(self, stream_id: str, events: Any, expected: Any, **options: Any) -> Any:
        result = await super().append(stream_id, events, expected, **options)
        if options.get("idempotency") is not None:
            self.unseen.add(options["idempotency"].key)
        return result

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        if key in self.unseen:
            self.unseen.discard(key)
            return None
        return await super().find_idempotent_result(key) if self.readable else None


async def test_a_key_committed_by_a_concurrent_request_replays_its_outcome() -> None:
    store = KeyCommittedMeanwhile()
    await handler_on(store).handle(Start(counter="a"))
    winner = await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")

    late = await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")

    assert late.replayed
    assert (late.stream_id, late.version, late.position) == (
        winner.stream_id,
        winner.version,
        winner.position,
    )
    assert await store.stream_version("a") == 2


async def test_a_key_committed_by_a_concurrent_request_for_another_command_is_refused() -> None:
    store = KeyCommittedMeanwhile()
    await handler_on(store).handle(Start(counter="a"))
    await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")

    with pytest.raises(IdempotencyKeyReused):
        await handler_on(store).handle(Add(counter="a", amount=2), idempotency_key="k")


async def test_a_refusal_after_a_concurrent_request_committed_another_command_is_refused() -> None:
    store = KeyCommittedMeanwhile()
    await handler_on(store).handle(Start(counter="a"), idempotency_key="k")

    with pytest.raises(IdempotencyKeyReused):  # not "stream exists": the key is the answer
        await handler_on(store).handle(Start(counter="b"), idempotency_key="k")


async def test_a_refused_command_under_a_key_committed_meanwhile_for_another_is_refused() -> None:
    store = KeyCommittedMeanwhile()
    await handler_on(store).handle(Start(counter="a"))
    await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")

    with pytest.raises(IdempotencyKeyReused):  # not "would go negative": the key answers
        await handler_on(store).handle(Subtract(counter="a", amount=5), idempotency_key="k")


async def test_a_concurrent_key_that_cannot_be_read_back_yet_asks_for_a_retry() -> None:
    store = KeyCommittedMeanwhile(readable=False)
    await handler_on(store).handle(Start(counter="a"))
    await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")

    with pytest.raises(
        StoreUnavailable,
        match="idempotency key 'k' was stored by a concurrent request that cannot be read "
        "back yet; retry",
    ):
        await handler_on(store).handle(Add(counter="a", amount=1), idempotency_key="k")


# -- snapshots --

MOMENT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


async def test_snapshots_need_a_snapshot_store() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^snapshots need a snapshot store: CommandHandler\(snapshots=\)$"
    ):
        handler_on(InMemoryEventStore()).enable_snapshots(counter, SnapshotPolicy(Count))


async def test_a_decider_without_a_policy_loads_and_appends_beside_one_that_has_one() -> None:
    snapshots, store = InMemorySnapshotStore(), InMemoryEventStore()
    await handler_on(store).handle(Start(counter="a"))
    handler = handler_on(store, snapshots=snapshots)
    handler.enable_snapshots(other, SnapshotPolicy(Count, every=1))

    await handler.handle(Add(counter="a", amount=1))  # loads the stream, then appends
    await handler.handle(Add(counter="a", amount=1))

    assert handler.snapshots_taken == 0
    assert await snapshots.load("a", "Count", 1) is None


async def test_a_snapshot_records_the_handlers_clock() -> None:
    snapshots = InMemorySnapshotStore()
    handler = handler_on(InMemoryEventStore(), snapshots=snapshots, clock=lambda: MOMENT)
    handler.enable_snapshots(counter, SnapshotPolicy(Count, every=2))

    await handler.handle(Start(counter="a"))
    await handler.handle(Add(counter="a", amount=3))

    snapshot = await snapshots.load("a", "Count", 1)
    assert snapshot is not None
    assert (snapshot.stream_version, snapshot.taken_at) == (2, MOMENT)


async def test_a_snapshot_that_cannot_be_saved_is_logged_and_the_command_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FullSnapshotStore(InMemorySnapshotStore):
        async def save(self, snapshot: Snapshot) -> None:
            raise OSError("disk full")

    handler = handler_on(InMemoryEventStore(), snapshots=FullSnapshotStore())
    handler.enable_snapshots(counter, SnapshotPolicy(Count, every=1))

    with caplog.at_level(logging.WARNING, logger="cqrskit.commands"):
        result = await handler.handle(Start(counter="a"))

    assert result.version == 1
    assert "snapshot of a at version 1 not saved: disk full" in caplog.messages
