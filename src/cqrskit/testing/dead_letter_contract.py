"""The dead-letter contract: a projection's ``stop`` and ``park`` policies, and retrying and
discarding dead letters, on a backend (see :mod:`cqrskit.deadletters`).

Dead letters are read-model rows written through :meth:`~cqrskit.ReadStore.apply`, so every
backend that passes the read-store contract should pass this one; run it against a backend
by importing it into a test module of a suite that provides an async ``backend`` fixture::

    from cqrskit.testing.dead_letter_contract import *  # noqa: F403

Each test uses random stream ids and a projection of its own, and its handlers ignore other
tests' streams, so the tests can share a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from cqrskit.codec import EventCodec
from cqrskit.deadletters import (
    ErrorPolicy,
    ProjectionHalted,
    dead_letter_count,
    dead_letters,
    discard_dead_letters,
    halted_event,
    retry_dead_letters,
)
from cqrskit.ids import uuid7
from cqrskit.messages import Event, NewEvent, RecordedEvent
from cqrskit.projections import Projection, ProjectionRunner
from cqrskit.readmodel import Column, ColumnType, Table, ViewTransaction
from cqrskit.store import Backend

__all__ = [
    "test_a_halt_is_retried_after_a_fix_and_the_projection_goes_on",
    "test_a_halted_event_that_is_discarded_is_skipped",
    "test_a_rebuild_forgets_the_dead_letters",
    "test_a_retry_that_fails_again_keeps_the_letters_in_order_with_the_new_error",
    "test_an_event_that_cannot_be_decoded_meets_the_policy_too",
    "test_discarding_drops_the_letters_and_the_stream_goes_on",
    "test_park_sets_aside_the_event_and_the_rest_of_its_stream_and_goes_on",
    "test_parked_streams_stay_parked_for_a_new_runner",
    "test_retry_applies_the_parked_events_in_order_exactly_once",
    "test_stop_halts_after_applying_the_events_before_and_halts_again_until_fixed",
]


class _Tallied(Event, frozen=True, kw_only=True):
    """One amount added to a stream's tally; ``poison`` makes the handler raise until fixed."""

    event_type = "ContractTallied"
    amount: int
    poison: bool = False


def _tallies(tag: str) -> Table:
    return Table(
        f"contract_tallies_{tag}",
        columns=(
            Column("stream_id", ColumnType.TEXT),
            Column("total", ColumnType.INTEGER),
            Column("amounts", ColumnType.JSON),
        ),
        key=("stream_id",),
    )


CODEC = EventCodec([_Tallied])


@dataclass
class _World:
    """One test's streams, its projection (whose handler raises on poison until ``fixed``)
    and a runner under a policy."""

    backend: Backend
    policy: ErrorPolicy
    tag: str = field(default_factory=lambda: uuid4().hex[:12])
    fixed: bool = False
    projection: Projection = field(init=False)
    tallies: Table = field(init=False)

    def __post_init__(self) -> None:
        self.tallies = tallies = _tallies(self.tag)
        self.projection = Projection(f"tally_{self.tag}", [tallies])

        @self.projection.on(_Tallied)
        def _tally(event: _Tallied, recorded: RecordedEvent, view: ViewTransaction) -> None:
            if not recorded.stream_id.startswith(self.tag):
                return  # another test's stream
            if event.poison and not self.fixed:
                raise ValueError(f"poisoned amount {event.amount}")
            row = view.get(tallies, recorded.stream_id) or {
                "stream_id": recorded.stream_id,
                "total": 0,
                "amounts": [],
            }
            row["total"] += event.amount
            row["amounts"].append(event.amount)
            view.put(tallies, row)

    def stream(self, name: str) -> str:
        return f"{self.tag}-{name}"

    async def given(self, *events: tuple[str, int | str]) -> list[int]:
        """Append ``(stream, amount)`` pairs in order (amount ``"poison"``, ``-n`` poisoned n,
        or ``"newer"``: stored by a newer release); their positions."""
        positions = []
        for name, amount in events:
            stream = self.stream(name)
            version = await self.backend.events.stream_version(stream)
            if amount == "newer":
                new = NewEvent(
                    event_id=uuid7(),
                    event_type=_Tallied.event_type,
                    schema_version=9,
                    data=b'{"amount": 1}',
                    metadata=b"{}",
                    recorded_at=datetime.now(UTC),
                )
            else:
                assert isinstance(amount, int)
                new = CODEC.new_event(_Tallied(amount=abs(amount), poison=amount < 0))
            result = await self.backend.events.append(stream, [new], version)
            positions.append(result.position)
        return positions

    def runner(self) -> ProjectionRunner:
        return ProjectionRunner(
            self.projection, self.backend.events, self.backend.read, CODEC, on_error=self.policy
        )

    async def project(self) -> ProjectionRunner:
        runner = self.runner()
        await runner.setup()
        await runner.catch_up()
        return runner

    async def totals(self) -> dict[str, list[int]]:
        rows = await self.backend.read.find(self.tallies, order_by=("stream_id",))
        return {
            row["stream_id"].removeprefix(f"{self.tag}-"): row["amounts"]
            for row in rows
            if row["stream_id"].startswith(self.tag)
        }

    async def letters(self) -> list[tuple[str, int, int | None]]:
        """(stream, position, blocked_by) of each dead letter."""
        return [
            (letter.stream_id.removeprefix(f"{self.tag}-"), letter.position, letter.blocked_by)
            for letter in await dead_letters(self.backend.read, self.projection)
        ]

    async def checkpoint(self) -> int:
        return await self.backend.read.checkpoint(self.projection.name)


async def test_park_sets_aside_the_event_and_the_rest_of_its_stream_and_goes_on(
    backend: Backend,
) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    _a1, _b1, poison, _b2, a3 = await world.given(
        ("a", 1), ("b", 10), ("a", -2), ("b", 20), ("a", 3)
    )

    await world.project()

    assert await world.totals() == {"a": [1], "b": [10, 20]}
    assert await world.letters() == [("a", poison, None), ("a", a3, poison)]
    assert await world.checkpoint() == a3
    assert await dead_letter_count(backend.read, world.projection.dead_letters) == 2
    first, behind = await dead_letters(backend.read, world.projection)
    assert first.error == "ValueError: poisoned amount 2"
    assert not first.halted
    assert "poisoned amount 2" in first.traceback
    assert first.attempts == 1
    assert first.event.stream_version == 2
    assert first.event.event_type == "ContractTallied"
    assert CODEC.decode(first.event) == _Tallied(amount=2, poison=True)
    assert behind.traceback == ""
    assert behind.attempts == 0
    assert await halted_event(backend.read, world.projection.dead_letters) is None


async def test_parked_streams_stay_parked_for_a_new_runner(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    _, poison = await world.given(("a", 1), ("a", -2))
    await world.project()
    later, other = await world.given(("a", 4), ("b", 5))

    await world.project()  # a fresh runner: it reads which streams are parked

    assert await world.letters() == [("a", poison, None), ("a", later, poison)]
    assert await world.totals() == {"a": [1], "b": [5]}
    assert await world.checkpoint() == other


async def test_retry_applies_the_parked_events_in_order_exactly_once(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    await world.given(("a", 1), ("a", -2), ("b", 7), ("a", 3))
    await world.project()
    world.fixed = True

    outcome = await retry_dead_letters(backend.read, world.projection, CODEC)
    again = await retry_dead_letters(backend.read, world.projection, CODEC)
    await world.given(("a", 4))
    await world.project()

    assert (outcome.applied, outcome.failed) == (2, ())
    assert (again.applied, again.failed) == (0, ())
    assert await world.totals() == {"a": [1, 2, 3, 4], "b": [7]}
    assert await world.letters() == []
    assert await dead_letter_count(backend.read, world.projection.dead_letters) == 0


async def test_a_retry_that_fails_again_keeps_the_letters_in_order_with_the_new_error(
    backend: Backend,
) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    _, poison, later = await world.given(("a", 1), ("a", -2), ("a", 3))
    await world.project()
    before = await world.checkpoint()

    outcome = await retry_dead_letters(backend.read, world.projection, CODEC)

    assert outcome.applied == 0
    assert [(f.position, f.attempts, f.error) for f in outcome.failed] == [
        (poison, 2, "ValueError: poisoned amount 2")
    ]
    assert await world.letters() == [("a", poison, None), ("a", later, poison)]
    assert [letter.attempts for letter in await dead_letters(backend.read, world.projection)] == [
        2,
        0,
    ]
    assert await world.totals() == {"a": [1]}
    assert await world.checkpoint() == before


async def test_discarding_drops_the_letters_and_the_stream_goes_on(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    await world.given(("a", 1), ("a", -2), ("a", 3), ("b", -4))
    await world.project()

    dropped = await discard_dead_letters(
        backend.read, world.projection, stream_id=world.stream("a")
    )
    await world.given(("a", 5))
    await world.project()

    assert dropped == 2
    assert await world.totals() == {"a": [1, 5]}
    assert [stream for stream, _, _ in await world.letters()] == ["b"]
    assert await dead_letter_count(backend.read, world.projection.dead_letters) == 1


async def test_stop_halts_after_applying_the_events_before_and_halts_again_until_fixed(
    backend: Backend,
) -> None:
    world = _World(backend, ErrorPolicy.STOP)
    _a1, b1, poison, _ = await world.given(("a", 1), ("b", 10), ("a", -2), ("b", 20))

    with pytest.raises(ProjectionHalted) as halted:
        await world.project()
    with pytest.raises(ProjectionHalted) as again:
        await world.project()

    letter = halted.value.letter
    assert (letter.position, letter.halted, letter.attempts) == (poison, True, 1)
    assert letter.error == "ValueError: poisoned amount 2"
    assert "Traceback" in letter.traceback
    assert f"halted at position {poison}" in str(halted.value)
    assert again.value.letter.attempts == 2
    assert await world.checkpoint() == b1
    assert await world.totals() == {"a": [1], "b": [10]}
    stored = await halted_event(backend.read, world.projection.dead_letters)
    assert stored is not None
    assert (stored.position, stored.attempts) == (poison, 2)
    assert await dead_letter_count(backend.read, world.projection.dead_letters) == 0


async def test_a_halt_is_retried_after_a_fix_and_the_projection_goes_on(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.STOP)
    *_, poison, last = await world.given(("a", 1), ("a", -2), ("b", 20))
    with pytest.raises(ProjectionHalted):
        await world.project()
    world.fixed = True

    outcome = await retry_dead_letters(backend.read, world.projection, CODEC)
    at = await world.checkpoint()
    await world.project()

    assert (outcome.applied, outcome.failed) == (1, ())
    assert at == poison
    assert await world.checkpoint() == last
    assert await world.totals() == {"a": [1, 2], "b": [20]}
    assert await halted_event(backend.read, world.projection.dead_letters) is None


async def test_a_halted_event_that_is_discarded_is_skipped(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.STOP)
    await world.given(("a", 1), ("a", -2), ("a", 3))
    with pytest.raises(ProjectionHalted):
        await world.project()

    dropped = await discard_dead_letters(backend.read, world.projection)
    await world.project()

    assert dropped == 1
    assert await world.totals() == {"a": [1, 3]}
    assert await world.letters() == []


async def test_an_event_that_cannot_be_decoded_meets_the_policy_too(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    _, newer, _ = await world.given(("a", 1), ("a", "newer"), ("b", 2))

    await world.project()

    (letter,) = await dead_letters(backend.read, world.projection)
    assert letter.position == newer
    assert letter.error.startswith("UndecodableEvent: ")
    assert "newer release" in letter.error
    assert await world.totals() == {"a": [1], "b": [2]}


async def test_a_rebuild_forgets_the_dead_letters(backend: Backend) -> None:
    world = _World(backend, ErrorPolicy.PARK)
    await world.given(("a", 1), ("a", -2), ("a", 3))
    await world.project()
    world.fixed = True

    await world.runner().rebuild()

    assert await world.letters() == []
    assert await world.totals() == {"a": [1, 2, 3]}
