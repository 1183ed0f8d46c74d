"""Projection runners fed from JetStream build the read model the event store would give."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import nats
import pytest

from cqrskit import EventCodec, ProjectionRunner
from cqrskit.memory import InMemoryReadStore
from cqrskit.nats import JetStreamLog, JetStreamSource, Relay
from cqrskit.partitions import partition_of
from orders.app import OrdersApp
from orders.domain import EVENT_TYPES
from orders.projections import PROJECTIONS
from tests.support.jetstream import nats_url
from tests.support.orders import fill_orders, full_replay, snapshot

CODEC = EventCodec(EVENT_TYPES)


def _runners(
    source: JetStreamSource | None, read: InMemoryReadStore, sources: dict[str, JetStreamSource]
) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(p, source or sources[p.name], read, CODEC, use_lease=False)
        for p in PROJECTIONS
    ]


def _node_sources(log: JetStreamLog, app: OrdersApp, node: str) -> dict[str, JetStreamSource]:
    return {
        p.name: JetStreamSource(log, app.backend.events, consumer=f"{node}_{p.name}")
        for p in PROJECTIONS
    }


async def _relayed(app: OrdersApp, log: JetStreamLog, count: int) -> None:
    await fill_orders(app, count, f"N-{uuid.uuid4().hex[:6]}")
    await Relay(app.backend.events, app.backend.read, log).catch_up()


async def test_a_node_that_catches_up_from_jetstream_equals_a_full_replay(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await _relayed(orders_app, jetstream, 30)
    read = InMemoryReadStore()

    for runner in _runners(None, read, _node_sources(jetstream, orders_app, "a")):
        await runner.setup()
        await runner.catch_up()

    assert await snapshot(read) == await full_replay(orders_app.backend.events)


async def test_a_running_node_follows_new_events_and_reaches_every_position(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await _relayed(orders_app, jetstream, 10)
    read = InMemoryReadStore()
    runners = _runners(None, read, _node_sources(jetstream, orders_app, "b"))
    for runner in runners:
        await runner.setup()
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        await _relayed(orders_app, jetstream, 10)
        head = await orders_app.head_position()

        reached = [await runner.wait_for(head, timeout=30) for runner in runners]

        assert reached == [True, True]
        assert await snapshot(read) == await full_replay(orders_app.backend.events)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_new_node_reads_from_the_event_store_what_the_stream_no_longer_holds(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await _relayed(orders_app, jetstream, 10)
    conn = await nats.connect(nats_url())
    try:  # retention dropped the first half of the stream
        state = await jetstream.state()
        await conn.jetstream().purge_stream(jetstream.stream, seq=state.last_sequence // 2)
    finally:
        await conn.close()
    await _relayed(orders_app, jetstream, 5)
    read = InMemoryReadStore()

    for runner in _runners(None, read, _node_sources(jetstream, orders_app, "c")):
        await runner.setup()
        await runner.catch_up()

    assert (await jetstream.state()).first_sequence > 1
    assert await snapshot(read) == await full_replay(orders_app.backend.events)


async def test_a_partition_source_reads_exactly_the_events_of_its_partition_in_order(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await _relayed(orders_app, jetstream, 30)
    logged = await orders_app.backend.events.read_all(0, 10_000)

    for partition in range(jetstream.partitions):
        source = JetStreamSource(
            jetstream, orders_app.backend.events, consumer=f"p{partition}", partition=partition
        )
        found = await source.read_all(0, 10_000)

        expected = [e for e in logged if partition_of(e.stream_id, 4) == partition]
        assert found == expected


async def test_a_read_that_waits_in_vain_on_a_busy_server_reads_again_until_the_last_event(
    orders_app: OrdersApp, jetstream: JetStreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a relayed log, and a server so busy that the first fetches come back empty
    await _relayed(orders_app, jetstream, 3)
    fetch, empty_answers = jetstream.fetch, [2]

    async def slow_fetch(subscription: Any, batch: int, timeout: float) -> list[Any]:
        if empty_answers[0]:
            empty_answers[0] -= 1
            return []
        return await fetch(subscription, batch, timeout)

    monkeypatch.setattr(jetstream, "fetch", slow_fetch)
    source = JetStreamSource(jetstream, orders_app.backend.events, consumer="busy")

    # when a runner asks for the log from the start
    events = await source.read_all(0, 1000)

    # then it gets every event, not an empty page that would read as "caught up"
    assert [e.position for e in events] == [
        e.position for e in await orders_app.backend.events.read_all(0, 1000)
    ]
    assert empty_answers == [0]


async def test_a_read_after_the_last_relayed_event_answers_at_once_with_nothing(
    orders_app: OrdersApp, jetstream: JetStreamLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _relayed(orders_app, jetstream, 2)
    head = await orders_app.backend.events.head_position()
    source = JetStreamSource(jetstream, orders_app.backend.events, consumer="after")

    async def no_fetch(subscription: Any, batch: int, timeout: float) -> list[Any]:
        raise AssertionError("nothing is stored after the head: no consumer needs to wait")

    monkeypatch.setattr(jetstream, "fetch", no_fetch)

    assert await source.read_all(head, 1000) == []
