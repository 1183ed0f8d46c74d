"""The projection supervisor: restarts with backoff, states, leases, waiting for a position."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest

from cqrskit import (
    Backoff,
    CommandHandler,
    EventCodec,
    ProjectionRunner,
    ProjectionState,
    StoreUnavailable,
    Supervisor,
)
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from orders.app import register_commands
from orders.domain import EVENT_TYPES, AddItems, CreateOrder, LineItem
from orders.projections import PROJECTIONS
from tests.support.flaky import FlakyEventStore, FlakyReadStore
from tests.support.orders import full_replay, snapshot
from tests.support.waiting import until

CODEC = EventCodec(EVENT_TYPES)
FAST = Backoff(initial=0.01, maximum=0.05)
PEN = LineItem(name="Pen", price=Decimal("1.50"), quantity=1)


async def write_orders(events: InMemoryEventStore, count: int, prefix: str = "ORD") -> int:
    handler = CommandHandler(events, CODEC)
    register_commands(handler)
    for n in range(count):
        await handler.handle(CreateOrder(order_id=f"{prefix}-{n}", customer_id="C", items=(PEN,)))
        await handler.handle(AddItems(order_id=f"{prefix}-{n}", items=(PEN,)))
    return await events.head_position()


def runners(events: object, read: object, batch_size: int = 1000) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(p, events, read, CODEC, batch_size=batch_size)  # type: ignore[arg-type]
        for p in PROJECTIONS
    ]


def states(supervisor: Supervisor) -> set[ProjectionState]:
    return {report.state for report in supervisor.status()}


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    supervisor.start()
    try:
        yield supervisor
    finally:
        await supervisor.stop()


def test_backoff_grows_exponentially_up_to_its_cap_and_jitter_only_shortens_it() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, multiplier=2.0, jitter=0.5)

    longest = [backoff.delay(n, draw=lambda: 0.0) for n in range(7)]
    shortest = [backoff.delay(n, draw=lambda: 1.0) for n in range(7)]

    assert longest == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert shortest == pytest.approx([d / 2 for d in longest])
    assert backoff.delay(10_000) <= 2.0


async def test_projections_a_supervisor_does_not_run_are_external_and_do_not_block_readiness() -> (
    None
):
    events, read = InMemoryEventStore(), InMemoryReadStore()
    supervisor = Supervisor(events, read, runners(events, read))

    assert states(supervisor) == {ProjectionState.EXTERNAL}
    assert supervisor.ready
    assert not supervisor.started


async def test_a_projection_that_fails_backs_off_restarts_and_catches_up_with_nothing_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cqrskit.supervision")
    events, memory = InMemoryEventStore(), InMemoryReadStore()
    read = FlakyReadStore(memory)
    head = await write_orders(events, 5)
    supervisor = Supervisor(events, read, runners(events, read), backoff=FAST)  # type: ignore[arg-type]

    async with running(supervisor):
        assert await supervisor.wait_for_position(head, timeout=10)
        read.failure = StoreUnavailable("database is down")
        head = await write_orders(events, 5, prefix="LATER")
        await until(lambda: states(supervisor) == {ProjectionState.BACKING_OFF})
        down = supervisor.status()
        assert not supervisor.ready
        await until(lambda: all(r.restarts >= 2 for r in supervisor.status()))
        read.failure = None
        assert await supervisor.wait_for_position(head, timeout=10)
        await until(lambda: states(supervisor) == {ProjectionState.RUNNING})
        up = await supervisor.report()

    assert all(r.last_error == "StoreUnavailable: database is down" for r in down)
    assert all(r.retry_in is not None and r.retry_in <= FAST.maximum for r in down)
    assert all(r.checkpoint == head and r.lag_events == 0 and r.retry_in is None for r in up)
    assert await snapshot(memory) == await full_replay(events)
    stops = [r for r in caplog.records if "stopped at checkpoint" in r.getMessage()]
    restarts = [r for r in caplog.records if "restarting (restart" in r.getMessage()]
    assert stops
    assert restarts
    assert all("database is down" in r.getMessage() for r in stops if r.levelname == "WARNING")
    assert states(supervisor) == {ProjectionState.STOPPED}
    assert not supervisor.ready


async def test_the_backoff_resets_once_a_restarted_projection_makes_progress() -> None:
    events, memory = InMemoryEventStore(), InMemoryReadStore()
    read = FlakyReadStore(memory)
    await write_orders(events, 1)
    slow = Backoff(initial=0.01, maximum=60.0, jitter=0.0)
    supervisor = Supervisor(events, read, runners(events, read)[:1], backoff=slow)  # type: ignore[arg-type]

    async with running(supervisor):
        for _ in range(3):  # fail, recover, apply, fail again: never a long delay
            read.failure = StoreUnavailable("down")
            head = await write_orders(events, 1, prefix=f"O{_}")
            await until(lambda: states(supervisor) == {ProjectionState.BACKING_OFF})
            (report,) = supervisor.status()
            assert report.retry_in is not None
            assert report.retry_in <= 0.02
            read.failure = None
            assert await supervisor.wait_for_position(head, timeout=10)


async def test_a_projection_catching_up_says_so_until_it_reaches_the_head_it_started_with() -> None:
    events = InMemoryEventStore()
    head = await write_orders(events, 3)
    gate = asyncio.Event()
    flaky = FlakyEventStore(events)
    original = events.read_all

    async def gated_read_all(after: int = 0, limit: int = 1000) -> list:  # type: ignore[type-arg]
        if after > 0:
            await gate.wait()
        return await original(after, limit)

    events.read_all = gated_read_all  # type: ignore[method-assign]
    read = InMemoryReadStore()
    supervisor = Supervisor(flaky, read, runners(flaky, read, batch_size=1)[:1])  # type: ignore[arg-type]

    async with running(supervisor):
        await until(lambda: supervisor.status()[0].checkpoint == 1)
        assert states(supervisor) == {ProjectionState.CATCHING_UP}
        assert supervisor.ready
        gate.set()
        assert await supervisor.wait_for_position(head, timeout=10)
        await until(lambda: states(supervisor) == {ProjectionState.RUNNING})
        assert supervisor.status()[0].events_applied == head
        assert supervisor.status()[0].events_per_second > 0


class LeasingMemoryReadStore(InMemoryReadStore):
    """The in-memory read store, with one lease per projection shared by its instances'
    ``leases`` dict (two "processes" in one test)."""

    def __init__(self, leases: dict[str, asyncio.Lock]) -> None:
        super().__init__()
        self._leases = leases

    @contextlib.asynccontextmanager
    async def acquire_lease(self, projection: str) -> AsyncIterator[None]:
        async with self._leases.setdefault(projection, asyncio.Lock()):
            yield


async def test_a_standby_waits_for_the_lease_and_takes_over_when_the_holder_stops() -> None:
    events = InMemoryEventStore()
    head = await write_orders(events, 2)
    leases: dict[str, asyncio.Lock] = {}
    first_read, second_read = LeasingMemoryReadStore(leases), LeasingMemoryReadStore(leases)
    first = Supervisor(events, first_read, runners(events, first_read))
    second = Supervisor(events, second_read, runners(events, second_read))

    first.start()
    assert await first.wait_for_position(head, timeout=10)
    async with running(second):
        await until(lambda: states(second) == {ProjectionState.STANDING_BY})
        assert second.ready
        await first.stop()
        await until(lambda: states(second) == {ProjectionState.RUNNING})
        assert await second.wait_for_position(head, timeout=10)


async def test_waiting_for_a_position_follows_projections_run_by_another_supervisor() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    worker = Supervisor(events, read, runners(events, read))
    service = Supervisor(events, read, runners(events, read))  # runs nothing: reads checkpoints

    head = await write_orders(events, 2)
    assert not await service.wait_for_position(head, timeout=0.05)
    async with running(worker):
        assert await service.wait_for_position(head, timeout=10)
    assert {r.checkpoint for r in await service.report()} == {head}
    assert states(service) == {ProjectionState.EXTERNAL}


async def test_a_projection_added_to_a_running_supervisor_starts_and_one_removed_stops() -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    orders_runner, stats_runner = runners(events, read)
    supervisor = Supervisor(events, read, [orders_runner])
    head = await write_orders(events, 2)

    async with running(supervisor):
        supervisor.add(stats_runner)
        assert supervisor.names == ("orders", "order_stats")
        assert await supervisor.wait_for_position(head, timeout=10)
        removed = await supervisor.remove("orders")
        assert removed is orders_runner
        assert supervisor.names == ("order_stats",)
        assert not orders_runner.status.running
        with pytest.raises(Exception, match="supervised twice"):
            supervisor.add(stats_runner)


async def test_a_failing_handler_is_retried_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, read = InMemoryEventStore(), InMemoryReadStore()
    await write_orders(events, 1)
    runner = runners(events, read)[0]
    broken: list[Callable[..., Awaitable[None]]] = []

    async def apply_broken(*args: object, **kwargs: object) -> None:
        broken.append(apply_broken)
        raise ValueError("a bug in a handler")

    read.apply = apply_broken  # type: ignore[method-assign,assignment]
    supervisor = Supervisor(events, read, [runner], backoff=FAST)

    async with running(supervisor):
        await until(lambda: supervisor.status()[0].restarts >= 2)
        (report,) = supervisor.status()

    assert report.last_error == "ValueError: a bug in a handler"
    logged = [r for r in caplog.records if r.name == "cqrskit.supervision" and r.exc_info]
    assert logged  # an unexpected error keeps its traceback
