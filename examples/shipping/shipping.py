"""An integration-event consumer another team would copy: Shipping reacts to Orders' events.

Every submitted order must be shipped once. This service reads ``OrderSubmitted`` events from
the Orders JetStream stream and records a shipment request in its own SQLite database. It uses
nothing of cqrskit: only nats-py and the message format (see README.md), so it can be written
in any language.

Delivery is at least once (a crash before the ack means a redelivery), so the handler is
idempotent: the shipment and the event id (``Nats-Msg-Id``) are stored in one transaction, and
an event id seen before is acknowledged without doing anything again.

Run it: ``python shipping.py --nats nats://127.0.0.1:4222 --stream orders --db shipping.db``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

SCHEMA = """
CREATE TABLE IF NOT EXISTS shipments (
    order_id TEXT PRIMARY KEY,
    submitted_at TEXT NOT NULL,
    event_position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS handled_events (event_id TEXT PRIMARY KEY);
"""


class Shipping:
    """Records a shipment for each ``OrderSubmitted`` event, exactly once per event."""

    def __init__(self, db_path: Path) -> None:
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.executescript(SCHEMA)

    def handle(self, headers: dict[str, str], data: bytes) -> bool:
        """Apply one event; False when there was nothing to do (another event type, or an
        event handled before: a redelivery)."""
        if headers.get("Cqrskit-Event-Type") != "OrderSubmitted":
            return False
        event_id = headers["Nats-Msg-Id"]
        payload = json.loads(data)
        with contextlib.closing(self.db.cursor()) as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                cursor.execute(
                    "INSERT INTO handled_events (event_id) VALUES (?) ON CONFLICT DO NOTHING",
                    (event_id,),
                )
                if cursor.rowcount == 0:
                    cursor.execute("ROLLBACK")
                    return False
                cursor.execute(
                    "INSERT INTO shipments (order_id, submitted_at, event_position) "
                    "VALUES (?, ?, ?)",
                    (
                        payload["order_id"],
                        headers["Cqrskit-Recorded-At"],
                        int(headers["Cqrskit-Position"]),
                    ),
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return True

    def shipments(self) -> list[tuple[str, int]]:
        rows = self.db.execute("SELECT order_id, event_position FROM shipments ORDER BY 1")
        return [(order_id, position) for order_id, position in rows]

    def close(self) -> None:
        self.db.close()


async def consume(
    shipping: Shipping,
    nats_url: str,
    stream: str,
    stop: asyncio.Event,
    *,
    consumer: str = "shipping",
) -> None:
    """Follow the stream's ``OrderSubmitted`` events with a durable consumer until ``stop``.

    The durable consumer remembers (in JetStream) what was acknowledged, so a restarted
    consumer continues where it left off; each message is acknowledged after its transaction.
    """
    connection = await nats.connect(nats_url, max_reconnect_attempts=-1)
    try:
        js = connection.jetstream()
        subscription = await js.pull_subscribe(
            f"{stream}.*.order.OrderSubmitted",  # <stream>.<partition>.<category>.<type>
            durable=consumer,
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
            ),
        )
        while not stop.is_set():
            try:
                messages: list[Msg] = await subscription.fetch(100, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                shipping.handle(dict(message.headers or {}), message.data)
                await message.ack()
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Ship every submitted order, once.")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="orders")
    parser.add_argument("--db", default="shipping.db", type=Path)
    args = parser.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        shipping = Shipping(args.db)
        try:
            await consume(shipping, args.nats, args.stream, stop)
        finally:
            shipping.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
