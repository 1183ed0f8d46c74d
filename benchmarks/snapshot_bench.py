"""Loading a long order cold, with and without snapshots (cqrskit only).

One order of ``events`` events (created, then one item per event, as ``AddItems`` commands
write them). Without snapshots a cold load reads and folds every event; with the Orders
policy (a snapshot every 100 events) it reads the snapshot and the events after it. The
snapshot is taken 99 events before the end, the most a load can have to fold under that
policy, so the figure is the worst case of the policy, not its best.
"""

from __future__ import annotations

from decimal import Decimal

from benchmarks.databases import Database
from benchmarks.measure import check, latencies_us_async
from cqrskit import CommandHandler, EventCodec, EventStore
from cqrskit.backends import open_backend
from cqrskit.snapshots import SnapshotPolicy
from orders.domain import (
    EVENT_TYPES,
    STATE_VERSION,
    UPCASTERS,
    ItemsAdded,
    LineItem,
    OrderCreated,
    OrderState,
    order_decider,
    stream_id,
)

EVERY = 100  # the Orders default (Settings.snapshot_every)
PEN = LineItem(name="Pen", price=Decimal("1.25"), quantity=2)


async def long_order_loads(
    db: Database, events: int, samples: int
) -> tuple[list[float], list[float]]:
    """Cold-load latencies (µs) of one order of ``events`` events: without, then with
    snapshots. Both loads are checked against the state the events must give."""
    backend = await open_backend(db.url)
    try:
        codec = EventCodec(EVENT_TYPES, upcasters=UPCASTERS)
        stream = stream_id("LONG-1")
        await _fill(backend.events, codec, stream, events - (EVERY - 1))
        policy = SnapshotPolicy(OrderState, every=EVERY, state_version=STATE_VERSION)
        snapshotting = CommandHandler(
            backend.events, codec, snapshots=backend.snapshots, cache_size=0
        )
        snapshotting.enable_snapshots(order_decider, policy)
        await snapshotting.load(order_decider, stream)  # takes the snapshot
        check(snapshotting.snapshots_taken == 1, "no snapshot was taken")
        await _fill(backend.events, codec, stream, EVERY - 1, start=events - (EVERY - 1))
        # Loads by this handler use that snapshot and never take another (its `every` is never
        # reached), so every load folds the 99 events after it: the policy's worst case.
        snapshotting = CommandHandler(
            backend.events, codec, snapshots=backend.snapshots, cache_size=0
        )
        snapshotting.enable_snapshots(
            order_decider,
            SnapshotPolicy(OrderState, every=10 * events, state_version=STATE_VERSION),
        )
        plain = CommandHandler(backend.events, codec, cache_size=0)
        items = events - 1
        expected = (events, OrderState(status="draft", item_count=items, total=PEN.amount * items))
        for handler in (plain, snapshotting):
            loaded = await handler.load(order_decider, stream)
            check(loaded == expected, f"loaded {loaded}, expected {expected}")
        without = await latencies_us_async(lambda: plain.load(order_decider, stream), samples)
        with_snapshots = await latencies_us_async(
            lambda: snapshotting.load(order_decider, stream), samples
        )
        check(snapshotting.snapshots_taken == 0, "loads with a snapshot took new ones")
        return without, with_snapshots
    finally:
        await backend.close()


async def _fill(
    store: EventStore, codec: EventCodec, stream: str, count: int, start: int = 0
) -> None:
    """Append events ``start + 1`` to ``start + count`` of the long order, 100 at a time."""
    for first in range(start, start + count, 100):
        numbers = range(first + 1, min(first + 100, start + count) + 1)
        batch = [
            codec.new_event(
                OrderCreated(order_id="LONG-1", customer_id="C", items=())
                if n == 1
                else ItemsAdded(order_id="LONG-1", items=(PEN,))
            )
            for n in numbers
        ]
        await store.append(stream, batch, first)
