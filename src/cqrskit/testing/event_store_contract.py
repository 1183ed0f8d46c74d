"""The event-store contract: what every :class:`~cqrskit.EventStore` backend must do.

Run it against a backend by importing it into a test module of a suite that provides an async
``backend`` fixture (a :class:`cqrskit.backends.Backend`)::

    from cqrskit.testing.event_store_contract import *  # noqa: F403

The tests need pytest and pytest-asyncio (``asyncio_mode = "auto"``). They use random stream
ids and never assume an empty store, so they can share a database with other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import msgspec
import pytest

from cqrskit.errors import ConcurrencyError, DuplicateIdempotencyKey
from cqrskit.messages import Metadata, NewEvent, RecordedEvent
from cqrskit.store import ANY_VERSION, NO_STREAM, Backend, EventStore, IdempotencyRecord

_TIMEOUT = 20.0  # seconds before a test that waits for events fails instead of hanging


def _event(n: int = 0, *, metadata: bytes = b"{}", recorded_at: datetime | None = None) -> NewEvent:
    return NewEvent(
        event_id=uuid4(),
        event_type="ContractEventHappened",
        schema_version=1,
        data=msgspec.json.encode({"n": n}),
        metadata=metadata,
        recorded_at=recorded_at or datetime.now(UTC),
    )


def _events(count: int) -> list[NewEvent]:
    return [_event(n) for n in range(count)]


def _stream() -> str:
    return f"contract-{uuid4()}"


def _ids(events: Sequence[NewEvent | RecordedEvent]) -> list[object]:
    return [event.event_id for event in events]


async def _read_all_of(
    store: EventStore, after: int, streams: set[str], limit: int = 100
) -> list[RecordedEvent]:
    """Every event of ``streams`` after ``after``, read page by page."""
    found: list[RecordedEvent] = []
    while True:
        batch = await store.read_all(after, limit)
        if not batch:
            return found
        assert len(batch) <= limit
        _assert_increasing([after, *(event.position for event in batch)])  # no repeats
        after = batch[-1].position
        found.extend(event for event in batch if event.stream_id in streams)


def _assert_increasing(positions: Sequence[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(positions)), positions


# --- appending and reading one stream ----------------------------------------------------------


async def test_append_then_read_stream_returns_the_events_in_order(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    events = _events(3)
    result = await store.append(stream, events, NO_STREAM)
    recorded = await store.read_stream(stream)
    assert _ids(recorded) == _ids(events)
    assert [r.stream_version for r in recorded] == [1, 2, 3]
    assert {r.stream_id for r in recorded} == {stream}
    assert [(r.event_type, r.schema_version, r.data) for r in recorded] == [
        (e.event_type, e.schema_version, e.data) for e in events
    ]
    _assert_increasing([r.position for r in recorded])
    assert (result.stream_id, result.version, result.position) == (
        stream,
        3,
        recorded[-1].position,
    )


async def test_a_stream_without_events_reads_empty_at_version_zero(backend: Backend) -> None:
    stream = _stream()
    assert await backend.events.read_stream(stream) == []
    assert await backend.events.stream_version(stream) == 0


async def test_read_stream_from_a_version_and_with_a_limit(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    events = _events(6)
    await store.append(stream, events[:2], NO_STREAM)
    await store.append(stream, events[2:], 2)
    assert _ids(await store.read_stream(stream, from_version=3)) == _ids(events[2:])
    assert _ids(await store.read_stream(stream, from_version=2, limit=3)) == _ids(events[1:4])
    assert _ids(await store.read_stream(stream, from_version=2, limit=2)) == _ids(events[1:3])
    assert _ids(await store.read_stream(stream, from_version=5, limit=10)) == _ids(events[4:])
    assert await store.read_stream(stream, from_version=7) == []


async def test_stream_version_follows_the_appends(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    await store.append(stream, _events(2), NO_STREAM)
    assert await store.stream_version(stream) == 2
    await store.append(stream, _events(3), 2)
    assert await store.stream_version(stream) == 5


async def test_metadata_recorded_at_and_payload_round_trip_exactly(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    metadata = msgspec.json.encode(
        Metadata(correlation_id=str(uuid4()), causation_id="cmd-1", extra={"user": "zoë ✓"})
    )
    moments = [
        datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1999, 12, 31, 20, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
    ]
    events = [_event(n, metadata=metadata, recorded_at=at) for n, at in enumerate(moments)]
    await store.append(stream, events, NO_STREAM)
    by_stream = await store.read_stream(stream)
    by_all = await _read_all_of(store, by_stream[0].position - 1, {stream})
    for recorded in (by_stream, by_all):
        assert [r.metadata for r in recorded] == [metadata, metadata]
        assert [r.recorded_at for r in recorded] == moments
        assert all(r.recorded_at.utcoffset() is not None for r in recorded)
        assert [r.data for r in recorded] == [e.data for e in events]
        assert recorded[0].meta.extra == {"user": "zoë ✓"}


# --- optimistic concurrency --------------------------------------------------------------------


async def test_a_stale_expected_version_raises_and_writes_nothing(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    start = await store.head_position()
    first = _events(2)
    await store.append(stream, first, NO_STREAM)
    for expected in (1, 3):
        refused = _events(3)
        with pytest.raises(ConcurrencyError) as raised:
            await store.append(stream, refused, expected)
        assert (raised.value.stream_id, raised.value.expected_version) == (stream, expected)
        assert raised.value.actual_version == 2
    assert _ids(await store.read_stream(stream)) == _ids(first)
    assert _ids(await _read_all_of(store, start, {stream})) == _ids(first)


async def test_no_stream_on_an_existing_stream_raises(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    await store.append(stream, _events(1), NO_STREAM)
    with pytest.raises(ConcurrencyError):
        await store.append(stream, _events(1), NO_STREAM)
    assert await store.stream_version(stream) == 1


async def test_an_expected_version_on_a_missing_stream_raises(backend: Backend) -> None:
    stream = _stream()
    with pytest.raises(ConcurrencyError) as raised:
        await backend.events.append(stream, _events(1), 1)
    assert raised.value.actual_version == 0
    assert await backend.events.read_stream(stream) == []


async def test_an_append_of_no_events_checks_the_version_and_writes_nothing(
    backend: Backend,
) -> None:
    store, stream = backend.events, _stream()
    appended = await store.append(stream, _events(2), NO_STREAM)
    nothing = await store.append(stream, [], 2)
    written = await store.written_position()
    assert (nothing.stream_id, nothing.version) == (stream, 2)
    # not the visible head: on PostgreSQL an older transaction elsewhere may hold it back
    assert appended.position <= nothing.position <= written
    assert (await store.append(_stream(), [], NO_STREAM)).version == 0
    assert (await store.append(stream, [], ANY_VERSION)).version == 2
    with pytest.raises(ConcurrencyError) as raised:
        await store.append(stream, [], 1)
    assert (raised.value.stream_id, raised.value.expected_version) == (stream, 1)
    assert raised.value.actual_version == 2
    taken = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint="f")
    await store.append(_stream(), _events(1), NO_STREAM, idempotency=taken)
    with pytest.raises(DuplicateIdempotencyKey) as duplicate:
        await store.append(stream, [], 2, idempotency=taken)
    assert duplicate.value.key == taken.key
    assert await store.stream_version(stream) == 2
    assert len(await store.read_stream(stream)) == 2


async def test_read_all_and_subscribe_all_default_to_the_beginning(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    events = _events(2)
    await store.append(stream, events, NO_STREAM)
    everything = await store.read_all()
    assert [e.event_id for e in everything if e.stream_id == stream] == _ids(events)
    assert everything == await store.read_all(0, 1000)
    received: list[RecordedEvent] = []

    async def consume() -> None:
        async for batch in store.subscribe_all():
            received.extend(e for e in batch if e.stream_id == stream)
            if len(received) == len(events):
                return

    async with asyncio.timeout(_TIMEOUT):
        await consume()
    assert _ids(received) == _ids(events)


async def test_any_version_appends_whatever_the_version(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    first, second = _events(2), _events(1)
    assert (await store.append(stream, first, ANY_VERSION)).version == 2
    assert (await store.append(stream, second, ANY_VERSION)).version == 3
    assert _ids(await store.read_stream(stream)) == _ids(first + second)


async def test_concurrent_appenders_with_one_expected_version_exactly_one_wins(
    backend: Backend,
) -> None:
    store, stream = backend.events, _stream()
    await store.append(stream, _events(1), NO_STREAM)
    version = 1
    for _ in range(3):
        candidates = [_events(2) for _ in range(20)]
        outcomes = await asyncio.gather(
            *(store.append(stream, events, version) for events in candidates),
            return_exceptions=True,
        )
        winners = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
        assert len(winners) == 1, outcomes
        losers = [o for i, o in enumerate(outcomes) if i not in winners]
        assert all(isinstance(o, ConcurrencyError) for o in losers), losers
        after = await store.read_stream(stream, from_version=version + 1)
        assert _ids(after) == _ids(candidates[winners[0]])
        version += 2
        assert await store.stream_version(stream) == version


async def test_racing_writers_that_retry_each_win_a_distinct_version(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    wins: dict[int, tuple[int, int]] = {}  # version -> (writer, round)

    async def writer(number: int) -> None:
        for round_ in range(5):
            event = _event(number * 100 + round_)
            while True:
                version = await store.stream_version(stream)
                try:
                    result = await store.append(stream, [event], version)
                except ConcurrencyError:
                    await asyncio.sleep(random.random() / 1000)
                    continue
                assert result.version not in wins
                wins[result.version] = (number, round_)
                break

    async with asyncio.timeout(_TIMEOUT * 3):
        await asyncio.gather(*(writer(number) for number in range(20)))
    recorded = await store.read_stream(stream)
    assert [r.stream_version for r in recorded] == list(range(1, 101))
    assert sorted(wins) == list(range(1, 101))
    payloads = [msgspec.json.decode(r.data)["n"] for r in recorded]
    assert payloads == [number * 100 + round_ for number, round_ in (wins[v] for v in sorted(wins))]


# --- atomicity and idempotency -----------------------------------------------------------------


async def test_a_one_event_append_stores_its_own_version_and_position_under_its_key(
    backend: Backend,
) -> None:
    store, stream = backend.events, _stream()
    await store.append(stream, _events(1), NO_STREAM)
    key = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint="one")

    result = await store.append(stream, _events(1), 1, idempotency=key)

    stored = await store.find_idempotent_result(key.key)
    assert stored is not None
    assert (stored.stream_id, stored.version, stored.position) == (stream, 2, result.position)
    assert result.position == (await store.read_stream(stream))[-1].position


async def test_a_duplicate_idempotency_key_aborts_the_whole_append(backend: Backend) -> None:
    store = backend.events
    key = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint="first")
    first_stream, second_stream = _stream(), _stream()
    result = await store.append(first_stream, _events(2), NO_STREAM, idempotency=key)
    again = IdempotencyRecord(key=key.key, fingerprint="second")
    with pytest.raises(DuplicateIdempotencyKey) as raised:
        await store.append(second_stream, _events(3), NO_STREAM, idempotency=again)
    assert raised.value.key == key.key
    assert await store.read_stream(second_stream) == []
    stored = await store.find_idempotent_result(key.key)
    assert stored is not None
    assert (stored.fingerprint, stored.stream_id, stored.version, stored.position) == (
        "first",
        first_stream,
        2,
        result.position,
    )


async def test_idempotency_records_are_stored_with_the_append(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    key = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint=str(uuid4()))
    assert await store.find_idempotent_result(key.key) is None
    await store.append(stream, _events(1), NO_STREAM)
    result = await store.append(stream, _events(2), 1, idempotency=key)
    stored = await store.find_idempotent_result(key.key)
    assert stored is not None
    assert (stored.key, stored.fingerprint) == (key.key, key.fingerprint)
    assert (stored.stream_id, stored.version, stored.position) == (
        result.stream_id,
        result.version,
        result.position,
    )


async def test_a_refused_append_leaves_no_idempotency_record(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    await store.append(stream, _events(1), NO_STREAM)
    key = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint="f")
    with pytest.raises(ConcurrencyError):
        await store.append(stream, _events(2), 0, idempotency=key)
    assert await store.find_idempotent_result(key.key) is None


async def test_refused_appends_do_not_disturb_concurrent_ones(backend: Backend) -> None:
    store = backend.events
    start = await store.head_position()
    taken = IdempotencyRecord(key=f"key-{uuid4()}", fingerprint="f")
    await store.append(_stream(), _events(1), NO_STREAM, idempotency=taken)
    good = {_stream(): _events(2) for _ in range(12)}
    stale = {_stream(): _events(2) for _ in range(6)}
    duplicate = {_stream(): _events(2)}
    calls = [store.append(s, e, NO_STREAM) for s, e in good.items()]
    calls += [store.append(s, e, 3) for s, e in stale.items()]
    calls += [store.append(s, e, NO_STREAM, idempotency=taken) for s, e in duplicate.items()]
    order = list(range(len(calls)))
    random.shuffle(order)
    shuffled = await asyncio.gather(*(calls[i] for i in order), return_exceptions=True)
    outcomes = [outcome for _, outcome in sorted(zip(order, shuffled, strict=True))]
    assert not any(isinstance(o, BaseException) for o in outcomes[: len(good)]), outcomes
    assert all(isinstance(o, ConcurrencyError) for o in outcomes[len(good) : -1]), outcomes
    assert isinstance(outcomes[-1], DuplicateIdempotencyKey)
    landed = await _read_all_of(store, start, set(good) | set(stale) | set(duplicate))
    assert sorted(map(str, _ids(landed))) == sorted(
        str(e.event_id) for events in good.values() for e in events
    )


# --- the global order --------------------------------------------------------------------------


async def test_read_all_returns_every_stream_in_the_global_order(backend: Backend) -> None:
    store = backend.events
    start = await store.head_position()
    streams = [_stream() for _ in range(3)]
    appended: list[NewEvent] = []
    positions = []
    for round_ in range(4):
        for stream in streams:
            events = _events(round_ % 2 + 1)
            result = await store.append(stream, events, ANY_VERSION)
            appended.extend(events)
            positions.append(result.position)
    recorded = await _read_all_of(store, start, set(streams))
    assert _ids(recorded) == _ids(appended)
    _assert_increasing([r.position for r in recorded])
    _assert_increasing(positions)
    assert positions[-1] == recorded[-1].position


async def test_read_all_in_small_batches_never_skips_or_repeats(backend: Backend) -> None:
    store = backend.events
    start = await store.head_position()
    streams = [_stream() for _ in range(5)]
    appended: list[NewEvent] = []
    for n in range(30):
        events = _events(n % 3 + 1)
        await store.append(streams[n % 5], events, ANY_VERSION)
        appended.extend(events)
    for limit in (1, 7, 1000):
        recorded = await _read_all_of(store, start, set(streams), limit=limit)
        assert _ids(recorded) == _ids(appended)


async def test_read_all_while_others_append_never_skips_or_repeats(backend: Backend) -> None:
    store = backend.events
    start = await store.head_position()
    streams = [_stream() for _ in range(8)]
    expected: dict[str, list[object]] = {stream: [] for stream in streams}
    writing = True

    async def writer(stream: str) -> None:
        version = 0
        for n in range(25):
            events = _events(n % 3 + 1)
            version = (await store.append(stream, events, version)).version
            expected[stream].extend(_ids(events))

    async def reader() -> list[RecordedEvent]:
        seen: list[RecordedEvent] = []
        position = start
        while True:
            batch = await store.read_all(position, 5)
            if batch:
                _assert_increasing([position, *(r.position for r in batch)])
                position = batch[-1].position
                seen.extend(r for r in batch if r.stream_id in expected)
            elif not writing:
                return seen
            else:
                await asyncio.sleep(0.001)

    async with asyncio.timeout(_TIMEOUT * 3):
        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer(stream) for stream in streams))
        writing = False
        seen = await reading
    assert len({r.event_id for r in seen}) == len(seen)
    for stream in streams:
        assert [r.event_id for r in seen if r.stream_id == stream] == expected[stream]
        versions = [r.stream_version for r in seen if r.stream_id == stream]
        assert versions == list(range(1, len(expected[stream]) + 1))


async def test_concurrent_appends_to_many_streams_all_land(backend: Backend) -> None:
    store = backend.events
    start = await store.head_position()
    streams = [_stream() for _ in range(64)]
    results = []

    async def writer(stream: str) -> None:
        version = 0
        for _ in range(4):
            result = await store.append(stream, _events(2), version)
            results.append(result)
            version = result.version

    async with asyncio.timeout(_TIMEOUT * 3):
        await asyncio.gather(*(writer(stream) for stream in streams))
    recorded = await _read_all_of(store, start, set(streams), limit=97)
    assert len(recorded) == 64 * 4 * 2
    _assert_increasing([r.position for r in recorded])
    assert len({result.position for result in results}) == len(results)
    for stream in streams:
        assert [r.stream_version for r in recorded if r.stream_id == stream] == list(range(1, 9))


async def test_head_position_is_the_last_position_read_all_can_return(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    events = _events(3)
    result = await store.append(stream, events, NO_STREAM)
    head = await store.head_position()
    assert head >= result.position
    assert (await store.read_stream(stream))[-1].position == result.position
    # The event at the head is readable, and so is the append's last event at its position
    # (exact whatever others append meanwhile: the database may be shared).
    [at_head] = await store.read_all(head - 1, 1)
    assert at_head.position == head
    [last] = await store.read_all(result.position - 1, 1)
    assert (last.position, last.event_id) == (result.position, events[-1].event_id)
    assert all(r.position > head for r in await store.read_all(head, 10))
    assert [r for r in await store.read_all(head, 10) if r.stream_id == stream] == []


async def test_the_written_position_covers_every_acknowledged_append_and_the_head(
    backend: Backend,
) -> None:
    store = backend.events
    assert await store.written_position() >= await store.head_position()
    first = await store.append(_stream(), _events(2), NO_STREAM)
    second = await store.append(_stream(), _events(1), NO_STREAM)
    written = await store.written_position()
    assert written >= max(first.position, second.position)
    assert written >= await store.head_position()


# --- subscriptions -----------------------------------------------------------------------------


async def _next(received: asyncio.Queue[RecordedEvent]) -> RecordedEvent:
    async with asyncio.timeout(_TIMEOUT):
        return await received.get()


@contextlib.asynccontextmanager
async def _subscribed(
    store: EventStore, after: int, stream: str, batch_size: int
) -> AsyncIterator[asyncio.Queue[RecordedEvent]]:
    received: asyncio.Queue[RecordedEvent] = asyncio.Queue()

    async def consume() -> None:
        async for batch in store.subscribe_all(after, batch_size):
            for recorded in batch:
                if recorded.stream_id == stream:
                    received.put_nowait(recorded)

    task = asyncio.create_task(consume())
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _let_run() -> None:
    """Let every other task run until it waits for something (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_subscribe_all_catches_up_then_follows_live_appends(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    start = await store.head_position()
    history = _events(5)
    await store.append(stream, history, NO_STREAM)
    async with _subscribed(store, start, stream, batch_size=2) as received:
        assert [(await _next(received)).event_id for _ in history] == _ids(history)
        live = _events(3)
        await _let_run()  # the subscription goes back to waiting for new events
        await store.append(stream, live[:1], 5)
        assert (await _next(received)).event_id == live[0].event_id
        await store.append(stream, live[1:], 6)
        assert [(await _next(received)).event_id for _ in live[1:]] == _ids(live[1:])
        assert received.empty()


async def test_subscribe_all_hands_out_batches_of_at_most_batch_size(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    start = await store.head_position()
    events = _events(5)
    await store.append(stream, events, NO_STREAM)
    batches: list[list[RecordedEvent]] = []

    async def consume() -> None:
        async for batch in store.subscribe_all(start, 2):
            batches.append(batch)
            if sum(len(b) for b in batches) == len(events):
                return

    async with asyncio.timeout(_TIMEOUT):
        await consume()
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [e.event_id for batch in batches for e in batch] == _ids(events)


async def test_subscribe_all_starts_after_the_given_position(backend: Backend) -> None:
    store, stream = backend.events, _stream()
    events = _events(4)
    await store.append(stream, events, NO_STREAM)
    recorded = await store.read_stream(stream)
    async with _subscribed(store, recorded[1].position, stream, batch_size=100) as received:
        assert [(await _next(received)).event_id for _ in events[2:]] == _ids(events[2:])


async def test_a_store_has_one_identity_which_its_appends_do_not_change(backend: Backend) -> None:
    store = backend.events
    before = await store.store_id()
    await store.append(_stream(), _events(1), NO_STREAM)

    assert isinstance(before, str)
    assert before
    assert await store.store_id() == before


#: The contract is every test of this module: ``from ... import *`` brings them all.
__all__ = sorted(name for name in dict(globals()) if name.startswith("test_"))
