"""The relay publishes the event store's log to JetStream: every event once, in order."""

from __future__ import annotations

import uuid

import nats

from cqrskit.nats import JetStreamLog, Relay, envelope_of
from cqrskit.partitions import partition_of
from orders.app import OrdersApp
from tests.support.jetstream import nats_url
from tests.support.orders import fill_orders


async def _stream_contents(log: JetStreamLog) -> list[tuple[str, dict[str, str], int]]:
    """(subject, headers, sequence) of every message of the stream, in order."""
    conn = await nats.connect(nats_url())
    try:
        js = conn.jetstream()
        state = await log.state()
        found = []
        for sequence in range(state.first_sequence, state.last_sequence + 1):
            raw = await js.get_msg(log.stream, sequence)
            assert raw.subject is not None
            assert raw.headers is not None
            found.append((raw.subject, raw.headers, sequence))
        return found
    finally:
        await conn.close()


async def test_the_relay_publishes_every_event_once_in_global_order(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await fill_orders(orders_app, 40, f"R-{uuid.uuid4().hex[:6]}")
    relay = Relay(orders_app.backend.events, orders_app.backend.read, jetstream, batch_size=25)

    await relay.catch_up()

    logged = await orders_app.backend.events.read_all(0, 10_000)
    published = await _stream_contents(jetstream)
    assert [int(h["Cqrskit-Position"]) for _, h, _ in published] == [e.position for e in logged]
    assert [h["Nats-Msg-Id"] for _, h, _ in published] == [str(e.event_id) for e in logged]
    assert [h["Cqrskit-Previous"] for _, h, _ in published] == [
        str(p) for p in [0, *(e.position for e in logged[:-1])]
    ]
    for (subject, headers, _), event in zip(published, logged, strict=True):
        partition = partition_of(event.stream_id, 4)
        assert subject == f"{jetstream.stream}.{partition}.order.{event.event_type}"
        assert headers["Cqrskit-Event-Type"] == event.event_type
        assert headers["Cqrskit-Stream-Id"] == event.stream_id
    assert relay.status.position == logged[-1].position
    assert await orders_app.backend.read.checkpoint(relay.name) == logged[-1].position


async def test_a_message_carries_the_event_as_stored(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    await fill_orders(orders_app, 3, f"M-{uuid.uuid4().hex[:6]}")
    await Relay(orders_app.backend.events, orders_app.backend.read, jetstream).catch_up()
    logged = await orders_app.backend.events.read_all(0, 100)
    conn = await nats.connect(nats_url())
    try:
        raws = [await conn.jetstream().get_msg(jetstream.stream, seq) for seq in (1, 2, 3)]
    finally:
        await conn.close()

    received = [envelope_of(raw.headers, raw.data or b"", raw.seq or 0).event for raw in raws]

    assert received == logged[:3]


async def test_a_restarted_relay_continues_after_the_streams_last_message(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    prefix = f"S-{uuid.uuid4().hex[:6]}"
    await fill_orders(orders_app, 10, prefix)
    events, read = orders_app.backend.events, orders_app.backend.read
    await Relay(events, read, jetstream).catch_up()
    await fill_orders(orders_app, 10, f"{prefix}-more")

    await Relay(events, read, jetstream).catch_up()

    logged = await events.read_all(0, 10_000)
    published = await _stream_contents(jetstream)
    assert [int(h["Cqrskit-Position"]) for _, h, _ in published] == [e.position for e in logged]


async def test_a_relay_on_a_purged_stream_continues_after_its_checkpoint(
    orders_app: OrdersApp, jetstream: JetStreamLog
) -> None:
    prefix = f"P-{uuid.uuid4().hex[:6]}"
    await fill_orders(orders_app, 5, prefix)
    events, read = orders_app.backend.events, orders_app.backend.read
    await Relay(events, read, jetstream).catch_up()
    before = await events.head_position()
    conn = await nats.connect(nats_url())
    try:
        await conn.jetstream().purge_stream(jetstream.stream)
    finally:
        await conn.close()
    await fill_orders(orders_app, 5, f"{prefix}-more")

    await Relay(events, read, jetstream).catch_up()

    published = await _stream_contents(jetstream)
    later = [e.position for e in await events.read_all(before, 10_000)]
    assert [int(h["Cqrskit-Position"]) for _, h, _ in published] == later
    assert published[0][1]["Cqrskit-Previous"] == str(before)
