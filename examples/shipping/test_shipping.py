"""The Shipping example: every submitted order gets exactly one shipment, even when the events
are delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from tests.support.jetstream import fresh_stream_name, nats_url

from cqrskit.nats import JetStreamLog, Relay
from orders.app import Settings, build_app
from orders.domain import CreateOrder, LineItem, SubmitOrder
from shipping import Shipping, consume

PEN = LineItem(name="Pen", price=Decimal("2.00"), quantity=1)


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_submitted_order_is_shipped_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    stream = fresh_stream_name(request)
    orders = await build_app(Settings(db_url=f"sqlite:///{tmp_path / 'orders.db'}"))
    log = await JetStreamLog.open(nats_url(), stream=stream)
    submitted = []
    for n in range(6):
        order_id = f"ORD-{uuid.uuid4().hex[:8]}"
        await orders.send(CreateOrder(order_id=order_id, customer_id="C", items=(PEN,)))
        if n % 2 == 0:
            await orders.send(SubmitOrder(order_id=order_id))
            submitted.append(order_id)
    await Relay(orders.backend.events, orders.backend.read, log).catch_up()
    shipping = Shipping(tmp_path / "shipping.db")
    stop = asyncio.Event()
    consumer = asyncio.create_task(consume(shipping, nats_url(), stream, stop))
    try:
        await _until(lambda: len(shipping.shipments()) == len(submitted))
        # Redelivered: JetStream delivers again what a crashed consumer had not acknowledged.
        connection = await nats.connect(nats_url())
        raw = await connection.jetstream().get_last_msg(stream, f"{stream}.*.*.OrderSubmitted")
        await connection.close()
        assert raw.headers is not None
        assert shipping.handle(dict(raw.headers), raw.data or b"") is False
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await log.close()
        await orders.close()

    assert sorted(order_id for order_id, _ in shipping.shipments()) == sorted(submitted)
    shipping.close()
