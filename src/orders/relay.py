"""The relay process (``orders relay``): publishes the event store to JetStream until SIGINT or
SIGTERM. Several may run; one is active, the others stand by (see :mod:`cqrskit.nats`)."""

from __future__ import annotations

import asyncio
import logging
import signal

from orders.app import OrdersApp
from orders.scaleout import run_relay

__all__ = ["relay"]

log = logging.getLogger("orders.relay")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def relay(orders_app: OrdersApp) -> None:
    """Run the relay until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        log.info("relay starting: stream %s", orders_app.settings.nats_stream)
        await run_relay(orders_app, stop)
        log.info("relay stopped")
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
