"""Upcasting through the public API: chains of versions and renames, on every read path."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import pytest

from cqrskit import (
    Column,
    ColumnType,
    CommandHandler,
    ConfigurationError,
    Decider,
    Event,
    EventCodec,
    NewEvent,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    Table,
    UndecodableEvent,
    UnknownEventType,
    Upcaster,
    ViewTransaction,
)
from cqrskit.ids import uuid7
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from cqrskit.subscriptions import subscribe
from cqrskit.testing import UpcasterSpec
from cqrskit.upcasting import Payload, rename


class Greeted(Event, frozen=True, kw_only=True):
    """Version 3: stored first as ``Hello {name}`` (v1), renamed ``Greeted`` (v1), then given
    a greeting (v2), then the name split in two (v3)."""

    schema_version = 3
    first_name: str
    last_name: str
    greeting: str


class Waved(Event, frozen=True, kw_only=True):
    who: str


def _add_greeting(data: Payload) -> Payload:
    return {**data, "greeting": "hello"}


def _split_name(data: Payload) -> Payload:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


UPCASTERS = (
    rename("Hello", "Greeted"),
    Upcaster("Greeted", 1, transform=_add_greeting),
    Upcaster("Greeted", 2, transform=_split_name),
)
codec = EventCodec([Greeted, Waved], upcasters=UPCASTERS)
spec = UpcasterSpec(codec)
ADA = Greeted(first_name="Ada", last_name="Lovelace", greeting="hello")


def stored(event_type: str, version: int, data: Payload) -> NewEvent:
    return NewEvent(
        event_id=uuid7(),
        event_type=event_type,
        schema_version=version,
        data=msgspec.json.encode(data),
        metadata=b"{}",
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


HISTORY = [
    stored("Hello", 1, {"name": "Ada Lovelace"}),
    stored("Greeted", 1, {"name": "Ada Lovelace"}),
    stored("Greeted", 2, {"name": "Ada Lovelace", "greeting": "hello"}),
    codec.new_event(ADA),
]


# -- the chain ----------------------------------------------------------------------------------


@pytest.mark.parametrize("event", HISTORY, ids=lambda e: f"{e.event_type}-v{e.schema_version}")
def test_given_any_earlier_shape_then_it_reads_as_the_current_event(event: NewEvent) -> None:
    spec.given_stored(event.event_type, event.schema_version, event.data).then(ADA)


def test_given_an_old_name_then_it_is_read_as_the_new_one_without_decoding() -> None:
    assert codec.read_as("Hello", 1) == "Greeted"
    assert codec.read_as("Greeted", 2) == "Greeted"
    assert codec.read_as("Waved", 1) == "Waved"
    assert codec.read_as("NeverHeardOf", 1) == "NeverHeardOf"


def test_upcasting_keeps_the_envelope_and_exact_numbers() -> None:
    class Paid(Event, frozen=True, kw_only=True):
        schema_version = 2
        amount: str

    money = EventCodec([Paid], upcasters=[Upcaster("Paid", 1, transform=_amount_as_text)])
    old = RecordedEvent(
        event_id=uuid7(),
        stream_id="s",
        stream_version=7,
        position=42,
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
        event_type="Paid",
        schema_version=1,
        data=b'{"amount":0.1000000000000000055511151231257827}',
        metadata=b'{"correlation_id":"c"}',
    )

    current = money.upcast(old)

    assert money.decode(old) == Paid(amount="0.1000000000000000055511151231257827")
    assert (current.event_type, current.schema_version) == ("Paid", 2)
    unchanged = ("event_id", "stream_id", "stream_version", "position", "recorded_at", "metadata")
    assert all(getattr(current, name) == getattr(old, name) for name in unchanged)


def _amount_as_text(data: Payload) -> Payload:
    return {"amount": str(data["amount"])}


# -- what cannot be read says why ---------------------------------------------------------------


def test_given_a_shape_newer_than_the_code_then_reading_it_says_a_newer_release_wrote_it() -> None:
    error = spec.given_stored("Greeted", 4, {}).then_raises(UndecodableEvent)
    assert "newer release" in error.reason
    assert (error.event_type, error.schema_version) == ("Greeted", 4)


def test_given_a_version_no_upcaster_starts_from_then_reading_it_fails() -> None:
    lone = EventCodec([Greeted])
    error = (
        UpcasterSpec(lone).given_stored("Greeted", 2, {"name": "x"}).then_raises(UndecodableEvent)
    )
    assert "no upcaster" in error.reason


def test_given_an_upcaster_that_fails_then_reading_names_the_event_and_the_cause() -> None:
    error = spec.given_stored("Greeted", 2, {"greeting": "hi"}).then_raises(UndecodableEvent)
    assert "KeyError" in error.reason
    assert isinstance(error.__cause__, KeyError)


def test_given_a_payload_that_does_not_fit_then_reading_it_fails() -> None:
    error = spec.given_stored("Waved", 1, {"who": 12}).then_raises(UndecodableEvent)
    assert "does not fit" in error.reason


def test_given_an_unknown_type_then_reading_it_raises_unknown_event_type() -> None:
    spec.given_stored("NeverHeardOf", 1, {}).then_raises(UnknownEventType)


@pytest.mark.parametrize(
    ("upcasters", "message"),
    [
        ([rename("Hello", "Greeted"), rename("Hello", "Waved")], "two upcasters start"),
        ([Upcaster("Greeted", 3)], "current shape"),
        ([Upcaster("Greeted", 1)], "not the current shape"),  # ends at v2
        ([rename("Old", "Gone")], "not the current shape"),
        (
            [Upcaster("A", 1, to_type="B"), Upcaster("B", 1, to_type="A")],
            "loop",
        ),
    ],
)
def test_an_inconsistent_chain_is_refused_when_the_codec_is_built(
    upcasters: list[Upcaster], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EventCodec([Greeted, Waved], upcasters=upcasters)


def test_upcaster_spec_fails_when_the_event_read_is_not_the_one_expected() -> None:
    with pytest.raises(AssertionError, match="expected Greeted"):
        spec.given_stored("Hello", 1, {"name": "Ada Byron"}).then(ADA)
    with pytest.raises(AssertionError, match="to read as Waved v1"):
        spec.given_stored("Hello", 1, {"name": "Ada Lovelace"}).then(Waved(who="Ada"))
    with pytest.raises(AssertionError, match="expected UndecodableEvent"):
        spec.given_stored("Hello", 1, {"name": "Ada Lovelace"}).then_raises(UndecodableEvent)


# -- every read path ----------------------------------------------------------------------------


async def _store_with_history() -> InMemoryEventStore:
    store = InMemoryEventStore()
    await store.append("greetings", HISTORY, 0)
    return store


async def test_loading_a_stream_for_a_command_folds_the_upcast_events() -> None:
    def evolve(names: tuple[str, ...], event: Greeted) -> tuple[str, ...]:
        return (*names, f"{event.greeting} {event.first_name} {event.last_name}")

    def decide(command: object, names: tuple[str, ...]) -> Sequence[Greeted]:
        return ()

    decider: Decider[object, Greeted, tuple[str, ...]] = Decider(decide, evolve, ())
    handler = CommandHandler(await _store_with_history(), codec)

    version, names = await handler.load(decider, "greetings")

    assert (version, names) == (4, ("hello Ada Lovelace",) * 4)


GREETINGS = Table(
    "greetings",
    columns=(Column("n", ColumnType.INTEGER), Column("line", ColumnType.TEXT)),
    key=("n",),
)
greetings = Projection("greetings", tables=[GREETINGS])


@greetings.on(Greeted)
def _greeted(event: Greeted, recorded: RecordedEvent, view: ViewTransaction) -> None:
    assert (recorded.event_type, recorded.schema_version) == ("Greeted", 3)
    line = f"{event.greeting} {event.last_name}"
    view.put(GREETINGS, {"n": recorded.stream_version, "line": line})


async def test_a_projection_handles_old_events_with_the_handler_of_the_current_class() -> None:
    store, read = await _store_with_history(), InMemoryReadStore()
    await store.append("other", [stored("Unrelated", 9, {"not": "known"})], 0)
    runner = ProjectionRunner(greetings, store, read, codec)
    await runner.setup()

    await runner.catch_up()  # an event no handler wants is skipped, never decoded

    rows = await read.find(GREETINGS, order_by=("n",))
    assert [row["line"] for row in rows] == ["hello Lovelace"] * 4
    assert runner.status.events_applied == 4


async def test_a_subscription_sees_old_and_new_events_in_their_current_shape() -> None:
    store = await _store_with_history()
    seen: list[RecordedEvent] = []

    async def follow() -> None:
        async for batch in subscribe(store, codec, batch_size=3):
            seen.extend(batch)
            if len(seen) == 5:
                return

    following = asyncio.create_task(follow())
    await store.append("greetings", [stored("Hello", 1, {"name": "Ada Lovelace"})], 4)
    await asyncio.wait_for(following, 10)

    assert [(e.event_type, e.schema_version) for e in seen] == [("Greeted", 3)] * 5
    assert [codec.decode(e) for e in seen] == [ADA] * 5
