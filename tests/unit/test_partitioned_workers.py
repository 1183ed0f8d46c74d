"""Partitioned projection workers over the in-memory twins: every partition has exactly one
owner, the group rebalances when a worker joins or leaves, and the read model (aggregates
included) equals a full replay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqrskit import (
    Backoff,
    CommandHandler,
    ConfigurationError,
    EventCodec,
    PartitionedProgress,
    PartitionedWorker,
    Projection,
    ProjectionRunner,
    ReadModelMismatch,
    RecordedEvent,
    Supervisor,
)
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from cqrskit.partitions import partition_of
from cqrskit.supervision import verify_read_model
from cqrskit.workers import StorePartition, assign_partitions, stored_partition_checkpoints
from orders.app import register_commands
from orders.domain import EVENT_TYPES, AddItems, CreateOrder, LineItem, SubmitOrder
from orders.projections import PROJECTIONS
from tests.support.orders import full_replay, snapshot
from tests.support.waiting import until

CODEC = EventCodec(EVENT_TYPES)
PARTITIONS = 8
PEN = LineItem(name="Pen", price=Decimal("1.50"), quantity=2)


@given(
    st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=64),
)
def test_every_partition_has_exactly_one_owner_and_shares_differ_by_at_most_one(
    members: set[str], count: int
) -> None:
    shares = [assign_partitions(list(members), member, count) for member in members]

    owners = [sum(p in share for share in shares) for p in range(count)]
    assert owners == [1] * count
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert assign_partitions(list(members), "not a member", count) == frozenset()


def test_a_worker_needs_a_read_store_that_holds_worker_groups() -> None:
    class NoGroups:  # a read store without join_group
        pass

    with pytest.raises(ConfigurationError, match="worker groups"):
        PartitionedWorker(
            PROJECTIONS, group="g", partitions=4, source_of=lambda p, n: InMemoryEventStore(),
            events=InMemoryEventStore(), read_store=NoGroups(), codec=CODEC,  # type: ignore[arg-type]
        )  # fmt: skip


class Group:
    """Workers of one group over one event store and one read store, in this process."""

    def __init__(self) -> None:
        self.events = InMemoryEventStore()
        self.read = InMemoryReadStore()
        self.commands = CommandHandler(self.events, CODEC)
        register_commands(self.commands)
        self.workers: dict[PartitionedWorker, asyncio.Task[None]] = {}

    def start(self) -> PartitionedWorker:
        def source_of(projection: Projection, partition: int) -> StorePartition:
            return StorePartition(self.events, partition, PARTITIONS)

        worker = PartitionedWorker(
            PROJECTIONS, group="orders", partitions=PARTITIONS, source_of=source_of,
            events=self.events, read_store=self.read, codec=CODEC, batch_size=7,
            rebalance_every=0.01, backoff=Backoff(initial=0.01, maximum=0.05),
        )  # fmt: skip
        self.workers[worker] = asyncio.create_task(worker.run())
        return worker

    async def stop(self, worker: PartitionedWorker) -> None:
        task = self.workers.pop(worker)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def balanced(self) -> bool:
        shares = [worker.status.owned for worker in self.workers]
        owned = sorted(p for share in shares for p in share)
        even = max(map(len, shares)) - min(map(len, shares)) <= 1
        return owned == list(range(PARTITIONS)) and even

    async def orders(self, prefix: str, count: int) -> None:
        for n in range(count):
            order_id = f"{prefix}-{n}"
            await self.commands.handle(
                CreateOrder(order_id=order_id, customer_id="C", items=(PEN,))
            )
            await self.commands.handle(AddItems(order_id=order_id, items=(PEN,)))
            if n % 2:
                await self.commands.handle(SubmitOrder(order_id=order_id))

    async def caught_up(self) -> None:
        progress = PartitionedProgress(
            self.events, self.read, [p.name for p in PROJECTIONS], PARTITIONS
        )
        assert await progress.wait_for_position(await self.events.head_position(), 30)
        assert await snapshot(self.read) == await full_replay(self.events)


@pytest.fixture
async def group() -> AsyncIterator[Group]:
    running = Group()
    yield running
    for worker in list(running.workers):
        await running.stop(worker)


async def test_workers_share_the_partitions_and_build_the_read_model_of_a_full_replay(
    group: Group,
) -> None:
    workers = [group.start() for _ in range(3)]
    await until(group.balanced)

    await group.orders("ORD-A", 40)

    await group.caught_up()
    assert all(len(worker.status.owned) in (2, 3) for worker in workers)


async def test_a_worker_that_joins_takes_a_share_and_one_that_leaves_hands_its_share_on(
    group: Group,
) -> None:
    first = group.start()
    await until(lambda: len(first.status.owned) == PARTITIONS)
    await group.orders("ORD-B", 20)

    second = group.start()
    await until(group.balanced)
    assert len(second.status.owned) == PARTITIONS // 2
    await group.orders("ORD-C", 20)
    await group.stop(first)
    await until(lambda: len(second.status.owned) == PARTITIONS)
    await group.orders("ORD-D", 20)

    await group.caught_up()


async def test_progress_waits_for_the_partition_that_holds_the_position(group: Group) -> None:
    await group.orders("ORD-E", 10)
    progress = PartitionedProgress(group.events, group.read, [p.name for p in PROJECTIONS], 8)
    head = await group.events.head_position()

    assert not await progress.applied_up_to(head)
    group.start()
    assert await progress.wait_for_position(head, 30)
    assert await progress.applied_up_to(head)


async def test_a_partition_whose_last_event_is_long_past_does_not_hold_a_token_up(
    group: Group,
) -> None:
    group.start()
    await group.orders("ORD-F", 40)
    await group.caught_up()
    names = [p.name for p in PROJECTIONS]
    head = await group.events.head_position()

    async def published(partition: int | None) -> int:
        events = await group.events.read_all(0, 10_000)
        mine = [e for e in events if partition in (None, partition_of(e.stream_id, PARTITIONS))]
        return mine[-1].position if mine else 0

    scanning = PartitionedProgress(group.events, group.read, names, PARTITIONS, scan_limit=5)
    knowing = PartitionedProgress(
        group.events, group.read, names, PARTITIONS, scan_limit=5, published=published
    )

    assert not await scanning.applied_up_to(head)  # more than 5 events after the lowest
    assert await knowing.applied_up_to(head)
    await group.orders("ORD-G", 1)
    assert await knowing.wait_for_position(await group.events.head_position(), 30)


async def test_a_worker_cancelled_while_it_hands_a_partition_on_stops(group: Group) -> None:
    stopping, release = asyncio.Event(), asyncio.Event()

    class SlowToStop(StorePartition):
        """A partition whose reading takes a while to stop (a fetch in flight)."""

        async def subscribe_all(
            self, after: int = 0, batch_size: int = 1000
        ) -> AsyncIterator[list[RecordedEvent]]:
            try:
                async for batch in super().subscribe_all(after, batch_size):
                    yield batch
            except asyncio.CancelledError:
                stopping.set()
                await asyncio.shield(release.wait())
                raise

    def source_of(projection: Projection, partition: int) -> StorePartition:
        return SlowToStop(group.events, partition, PARTITIONS)

    first = PartitionedWorker(
        PROJECTIONS, group="orders", partitions=PARTITIONS, source_of=source_of,
        events=group.events, read_store=group.read, codec=CODEC, rebalance_every=0.01,
    )  # fmt: skip
    running = asyncio.create_task(first.run())
    await until(lambda: len(first.status.owned) == PARTITIONS)
    group.start()  # the first worker hands half its partitions on: one stops slowly
    await until(stopping.is_set)

    running.cancel()
    release.set()

    await asyncio.wait({running}, timeout=30)  # waiting, not cancelling it once more
    assert running.cancelled()


async def test_a_runner_that_loses_a_cancellation_is_still_stopped(group: Group) -> None:
    lost = asyncio.Event()

    class LosesOneCancellation(StorePartition):
        """Reads like a library whose ``asyncio.wait_for`` swallowed the first cancellation."""

        async def subscribe_all(
            self, after: int = 0, batch_size: int = 1000
        ) -> AsyncIterator[list[RecordedEvent]]:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                lost.set()
            await asyncio.Event().wait()
            yield []

    runner = ProjectionRunner(
        PROJECTIONS[0], LosesOneCancellation(group.events, 0, 1), group.read, CODEC
    )
    supervisor = Supervisor(group.events, group.read, [runner])
    supervisor.start()
    await until(lambda: runner.status.running)

    stopping = asyncio.create_task(supervisor.remove(PROJECTIONS[0].name))

    await asyncio.wait({stopping}, timeout=30)
    assert lost.is_set()
    assert stopping.done()


async def test_a_reset_while_workers_run_under_commands_ends_in_the_read_model_of_a_full_replay(
    group: Group,
) -> None:
    first, second = group.start(), group.start()
    await until(group.balanced)
    await group.orders("ORD-H", 20)
    await group.caught_up()  # every partition has a checkpoint, the aggregates have rows
    forgotten: list[str] = []

    async def commands_with_a_reset_halfway() -> None:
        for n in range(20):
            if n == 10:
                forgotten.extend(await first.reset_read_model())
            await group.orders(f"ORD-I{n}", 2)
            await asyncio.sleep(0)  # the workers apply what they can between two orders

    await commands_with_a_reset_halfway()

    assert forgotten == sorted(first.checkpoint_names)
    await group.caught_up()  # rebuilt by the running workers: no event lost or counted twice
    assert await second.members() == sorted([first.status.member, second.status.member])


async def test_a_reset_of_an_idle_read_model_is_rebuilt_without_waiting_for_new_events(
    group: Group,
) -> None:
    worker = group.start()
    await group.orders("ORD-K", 20)
    await group.caught_up()

    await worker.reset_read_model()

    await group.caught_up()  # no new event: the workers noticed the reset by themselves


async def test_a_reset_forgets_the_partition_checkpoints_of_any_count_and_no_other(
    group: Group,
) -> None:
    worker = group.start()
    await group.orders("ORD-J", 10)
    await group.caught_up()
    await group.stop(worker)
    await group.read.apply("orders[1/4]", 0, 3, lambda view: None)  # a stream of 4 partitions
    await group.read.apply("orders", 0, 3, lambda view: None)  # run unpartitioned once
    stale = await stored_partition_checkpoints(group.read, ["orders"])
    assert "orders[1/4]" in stale
    assert "orders" not in stale

    forgotten = await worker.reset_read_model(["orders"])

    assert "orders[1/4]" in forgotten
    assert await stored_partition_checkpoints(group.read, ["orders"]) == []
    assert await stored_partition_checkpoints(group.read, ["order_stats"]) != []
    assert await group.read.checkpoint("orders") == 3
    assert await snapshot(group.read) != await full_replay(group.events)
    with pytest.raises(ConfigurationError, match="no projection 'nope'"):
        await worker.reset_read_model(["nope"])
    group.start()
    await group.caught_up()


async def test_a_projection_run_as_one_on_the_read_model_the_workers_keep_is_refused(
    group: Group,
) -> None:
    # given a read model the partitioned workers built
    worker = group.start()
    await until(lambda: len(worker.status.owned) == PARTITIONS)
    await group.orders("ORD-H", 12)
    await group.caught_up()
    built = await snapshot(group.read)
    # when a process runs the same projections unpartitioned over it
    runners = [ProjectionRunner(p, group.events, group.read, CODEC) for p in PROJECTIONS]
    supervisor = Supervisor(
        group.events, group.read, runners, backoff=Backoff(initial=0.01, maximum=0.05)
    )
    supervisor.start()
    try:
        await until(
            lambda: all(
                report.last_error is not None and "kept by partitioned workers" in report.last_error
                for report in supervisor.status()
            )
        )
        refused = [runner.status.events_applied for runner in runners]
    finally:
        await supervisor.stop()
    # then none of them ran: every event stays applied once, the aggregates are not doubled
    assert refused == [0, 0]
    assert await snapshot(group.read) == built
    with pytest.raises(ReadModelMismatch, match=r"kept by partitioned workers \(checkpoints "):
        await verify_read_model(group.events, group.read, [p.name for p in PROJECTIONS])
    # and a version of its own (another name, its own tables) is not theirs to refuse
    await verify_read_model(group.events, group.read, ["orders@v2"])
