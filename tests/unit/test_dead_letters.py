"""Dead letters as specifications: given events, when projected under a policy, then the read
model, the dead letters and the supervisor's view of it (in memory; the backends run
``cqrskit.testing.dead_letter_contract``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cqrskit import (
    ErrorPolicy,
    Event,
    EventCodec,
    Projection,
    ProjectionRunner,
    ProjectionState,
    RecordedEvent,
    StoreUnavailable,
    Supervisor,
    Table,
    ViewTransaction,
)
from cqrskit.deadletters import dead_letters, halted_event, retry_dead_letters
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from cqrskit.readmodel import Column, ColumnType, Row
from tests.support.waiting import until


class Counted(Event, frozen=True, kw_only=True):
    amount: int
    poison: bool = False


CODEC = EventCodec([Counted])
TOTALS = Table(
    "unit_totals",
    columns=(Column("stream_id", ColumnType.TEXT), Column("total", ColumnType.INTEGER)),
    key=("stream_id",),
)
EVENTS = Table(
    "unit_event_count",
    columns=(Column("scope", ColumnType.TEXT), Column("events", ColumnType.INTEGER)),
    key=("scope",),
)


@dataclass
class World:
    """An event store, a read store, a ``totals`` projection whose handler raises on a
    poisoned event until ``fixed``, and a ``count`` projection that never fails."""

    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    read: InMemoryReadStore = field(default_factory=InMemoryReadStore)
    fixed: bool = False
    totals: Projection = field(init=False)
    count: Projection = field(init=False)

    def __post_init__(self) -> None:
        self.totals, self.count = Projection("totals", [TOTALS]), Projection("count", [EVENTS])

        @self.totals.on(Counted)
        def _total(event: Counted, recorded: RecordedEvent, view: ViewTransaction) -> None:
            row = view.get(TOTALS, recorded.stream_id) or {"stream_id": recorded.stream_id}
            view.put(TOTALS, {**row, "total": row.get("total", 0) + event.amount})
            if event.poison and not self.fixed:
                raise ValueError("poisoned")  # after a write, which must not stay

        @self.count.on(Counted)
        def _count(event: Counted, recorded: RecordedEvent, view: ViewTransaction) -> None:
            row = view.get(EVENTS, "all") or {"scope": "all", "events": 0}
            view.put(EVENTS, {**row, "events": row["events"] + 1})

    async def given(self, *events: tuple[str, int]) -> list[int]:
        """``(stream, amount)`` appended in order (a negative amount is poisoned)."""
        positions = []
        for stream, amount in events:
            version = await self.events.stream_version(stream)
            new = CODEC.new_event(Counted(amount=abs(amount), poison=amount < 0))
            positions.append((await self.events.append(stream, [new], version)).position)
        return positions

    def runner(self, projection: Projection, policy: ErrorPolicy, read: Any = None) -> Any:
        return ProjectionRunner(projection, self.events, read or self.read, CODEC, on_error=policy)

    async def project(self, projection: Projection, policy: ErrorPolicy) -> None:
        runner = self.runner(projection, policy)
        await runner.setup()
        await runner.catch_up()

    async def table(self, table: Table) -> list[Row]:
        return await self.read.find(table, order_by=table.key)


class FailingReads:
    """A read store whose views fail to read a row while ``failing`` (the database went away
    in the middle of a batch)."""

    def __init__(self, inner: InMemoryReadStore) -> None:
        self.inner, self.failing = inner, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def apply(
        self, projection: str, expected: int, position: int, write: Callable[..., None]
    ) -> None:
        outer = self

        class View:
            def __init__(self, view: ViewTransaction) -> None:
                self.view = view

            def get(self, table: Table, *key: Any) -> Row | None:
                if outer.failing:
                    raise StoreUnavailable("the database went away")
                return self.view.get(table, *key)

            def put(self, table: Table, row: Row) -> None:
                self.view.put(table, row)

            def delete(self, table: Table, *key: Any) -> None:
                self.view.delete(table, *key)

        await self.inner.apply(projection, expected, position, lambda view: write(View(view)))


@contextlib.asynccontextmanager
async def supervising(world: World, policy: ErrorPolicy) -> AsyncIterator[Supervisor]:
    runners = [world.runner(world.totals, policy), world.runner(world.count, policy)]
    supervisor = Supervisor(world.events, world.read, runners, halt_poll=0.01)
    supervisor.start()
    try:
        yield supervisor
    finally:
        await supervisor.stop()


def state_of(supervisor: Supervisor, name: str) -> ProjectionState:
    return next(report.state for report in supervisor.status() if report.name == name)


async def test_an_error_policy_is_stop_or_park_and_nothing_else() -> None:
    world = World()

    assert world.runner(world.totals, "park").on_error is ErrorPolicy.PARK  # type: ignore[arg-type]
    assert ProjectionRunner(world.totals, world.events, world.read, CODEC).on_error == "stop"
    with pytest.raises(ValueError, match="'retry' is not a valid ErrorPolicy"):
        world.runner(world.totals, "retry")  # type: ignore[arg-type]


async def test_a_read_store_failure_inside_a_handler_is_not_taken_for_the_events() -> None:
    world = World()
    await world.given(("a", 1), ("b", 2))
    flaky = FailingReads(world.read)
    runner = world.runner(world.totals, ErrorPolicy.PARK, read=flaky)
    await runner.setup()
    flaky.failing = True

    with pytest.raises(StoreUnavailable):
        await runner.catch_up()

    assert await dead_letters(world.read, world.totals) == []
    assert await world.read.checkpoint("totals") == 0
    flaky.failing = False
    await runner.catch_up()
    assert await world.table(TOTALS) == [
        {"stream_id": "a", "total": 1},
        {"stream_id": "b", "total": 2},
    ]


async def test_the_rows_an_event_wrote_before_it_failed_are_rolled_back_with_it() -> None:
    world = World()
    await world.given(("a", 1), ("a", -5), ("b", 2))

    await world.project(world.totals, ErrorPolicy.PARK)

    # the poisoned event's handler wrote its row before raising: that write is gone
    assert await world.table(TOTALS) == [
        {"stream_id": "a", "total": 1},
        {"stream_id": "b", "total": 2},
    ]


async def test_a_halted_projection_is_not_restarted_and_the_others_go_on() -> None:
    world = World()
    _, poison, head = await world.given(("a", 1), ("a", -2), ("b", 3))

    async with supervising(world, ErrorPolicy.STOP) as supervisor:
        await until(lambda: state_of(supervisor, "totals") is ProjectionState.HALTED)
        await until(lambda: supervisor.status()[1].checkpoint == head, what="count caught up")
        report = {r.name: r for r in await supervisor.report()}["totals"]
        more = await world.given(("b", 4))
        await until(lambda: supervisor.status()[1].checkpoint == more[0], what="count goes on")

        # read-your-writes does not wait for it: it would never get there
        assert await supervisor.wait_for_position(more[0], timeout=60)
        assert supervisor.ready  # every process would halt at it: see docs/operations.md
        assert report.state is ProjectionState.HALTED
        assert report.halted is not None
        assert report.halted.position == poison
        assert report.last_error is not None
        assert "ValueError: poisoned" in report.last_error
        assert report.checkpoint == poison - 1
        assert [r.restarts for r in supervisor.status()] == [0, 0]
        assert state_of(supervisor, "totals") is ProjectionState.HALTED


async def test_a_halt_retried_elsewhere_is_noticed_and_the_projection_resumes() -> None:
    world = World()
    *_, head = await world.given(("a", 1), ("a", -2), ("b", 3))

    async with supervising(world, ErrorPolicy.STOP) as supervisor:
        await until(lambda: state_of(supervisor, "totals") is ProjectionState.HALTED)
        world.fixed = True
        outcome = await retry_dead_letters(world.read, world.totals, CODEC)  # e.g. the CLI
        await until(lambda: state_of(supervisor, "totals") is ProjectionState.RUNNING)
        assert await supervisor.wait_for_position(head, timeout=60)
        restarts = supervisor.status()[0].restarts

    assert outcome.applied == 1
    assert restarts == 1
    assert await world.table(TOTALS) == [
        {"stream_id": "a", "total": 3},
        {"stream_id": "b", "total": 3},
    ]
    assert await halted_event(world.read, world.totals.dead_letters) is None


async def test_resume_runs_a_halted_projection_again_at_once() -> None:
    world = World()
    *_, head = await world.given(("a", -1), ("b", 3))
    runners = [world.runner(world.totals, ErrorPolicy.STOP)]
    supervisor = Supervisor(world.events, world.read, runners, halt_poll=3600)
    supervisor.start()
    try:
        await until(lambda: state_of(supervisor, "totals") is ProjectionState.HALTED)
        world.fixed = True  # a fix that needs no deploy: the handler's input was repaired
        supervisor.resume("totals")
        assert await supervisor.wait_for_position(head, timeout=60)
    finally:
        await supervisor.stop()

    assert await halted_event(world.read, world.totals.dead_letters) is None


async def test_a_projection_another_process_runs_is_reported_halted_with_its_event() -> None:
    world = World()
    _, poison = await world.given(("a", 1), ("a", -2))
    with contextlib.suppress(Exception):
        await world.project(world.totals, ErrorPolicy.STOP)  # the other process
    supervisor = Supervisor(world.events, world.read, [world.runner(world.totals, "stop")])  # type: ignore[arg-type]

    (report,) = await supervisor.report()
    waited = await supervisor.wait_for_position(poison, timeout=30)

    assert waited  # at once: it would never get there
    assert report.state is ProjectionState.HALTED
    assert report.halted is not None
    assert report.halted.position == poison
    assert report.dead_letters == 0


async def test_the_report_counts_parked_events() -> None:
    world = World()
    await world.given(("a", -1), ("a", 2), ("b", -3))
    await world.project(world.totals, ErrorPolicy.PARK)
    supervisor = Supervisor(
        world.events, world.read, [world.runner(world.totals, ErrorPolicy.PARK)]
    )

    (report,) = await supervisor.report()

    assert (report.state, report.dead_letters, report.halted) == (
        ProjectionState.EXTERNAL,
        3,
        None,
    )


class RunnerCommitsFirst:
    """A read store on which, just before the first transaction of the caller, another runner
    commits a batch (it parks a later event of the stream being retried)."""

    def __init__(self, inner: InMemoryReadStore, meanwhile: Callable[[], Any]) -> None:
        self.inner = inner
        self.meanwhile: Callable[[], Any] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def apply(
        self, projection: str, expected: int, position: int, write: Callable[..., None]
    ) -> None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        await self.inner.apply(projection, expected, position, write)


async def test_a_retry_while_the_runner_parks_more_of_the_stream_applies_each_event_once() -> None:
    world = World()
    await world.given(("a", 1), ("a", -2))
    await world.project(world.totals, ErrorPolicy.PARK)
    world.fixed = True

    async def runner_parks_a_later_event() -> None:
        await world.given(("a", 3))
        await world.project(world.totals, ErrorPolicy.PARK)

    racing = RunnerCommitsFirst(world.read, runner_parks_a_later_event)
    outcome = await retry_dead_letters(racing, world.totals, CODEC)

    assert (outcome.applied, outcome.failed) == (2, ())
    assert await world.table(TOTALS) == [{"stream_id": "a", "total": 6}]
    assert await dead_letters(world.read, world.totals) == []
