"""The projection worker (``orders project``): the projections in a process of their own,
beside services started with ``orders serve --no-projections``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from orders.app import OrdersApp

__all__ = ["project"]

log = logging.getLogger("orders.worker")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def project(orders_app: OrdersApp) -> None:
    """Run the projections until SIGINT or SIGTERM (or until one of them stops on an error;
    closing ``orders_app`` then raises that error)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        orders_app.start_projections()
        log.info("projections running: %s", ", ".join(orders_app.projection_names))
        while orders_app.projections_running and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        log.info("stopping projections" if stop.is_set() else "a projection stopped")
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
