"""The projection worker (``orders project``): the projections in a process of their own,
beside services started with ``orders serve --no-projections``."""

from __future__ import annotations

import asyncio
import logging
import signal

from orders.app import OrdersApp

__all__ = ["project"]

log = logging.getLogger("orders.worker")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def project(orders_app: OrdersApp) -> None:
    """Run the projections until SIGINT or SIGTERM. A projection that fails is restarted
    with a backoff (see :class:`cqrskit.Supervisor`), so the worker outlives store outages."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        orders_app.start_projections()
        worker = orders_app.partition_worker
        if worker is not None:
            log.info(
                "partitioned worker of group %s: %d partitions of %s",
                worker.group, worker.partitions, ", ".join(p.name for p in worker.projections),
            )  # fmt: skip
        else:
            log.info("projections running: %s", ", ".join(orders_app.projection_names))
        await stop.wait()
        log.info("stopping projections")
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
