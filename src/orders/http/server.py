"""Running the service: uvicorn with a graceful shutdown, and the separate projection worker.

Shutdown order on SIGTERM/SIGINT: uvicorn stops accepting connections and lets in-flight
requests finish (commands included, up to ``graceful_timeout``); then the caller closes the
:class:`~orders.app.OrdersApp`, which stops the projections (a batch is committed whole or rolled
back whole, checkpoint included) and closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn

from orders.app import OrdersApp
from orders.http.access import JsonFormatter
from orders.http.api import create_api

log = logging.getLogger("orders.http")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def configure_logging(level: int = logging.INFO) -> None:
    """Log JSON lines to stderr (the entrypoints call this; importing never configures)."""
    root = logging.getLogger()
    if any(getattr(h, "_orders_json", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._orders_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def build_server(
    orders_app: OrdersApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    projections_in_process: bool = True,
    graceful_timeout: int = 30,
) -> uvicorn.Server:
    """A uvicorn server for the API over ``orders_app`` (not started)."""
    api = create_api(orders_app, projections_in_process=projections_in_process)
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        lifespan="off",  # orders_app is opened and closed by our caller, around the server
        log_config=None,  # keep the process's logging (JSON lines)
        access_log=False,  # RequestLog writes one structured line per request instead
        timeout_graceful_shutdown=graceful_timeout,
        server_header=False,
    )
    return uvicorn.Server(config)


async def serve(
    orders_app: OrdersApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    run_projections: bool = True,
    graceful_timeout: int = 30,
) -> None:
    """Serve ``orders_app`` over HTTP until SIGINT or SIGTERM, then return (the caller closes
    ``orders_app``). With ``run_projections`` the projections run in this process."""
    if run_projections:
        orders_app.start_projections()
    server = build_server(
        orders_app,
        host=host,
        port=port,
        projections_in_process=run_projections,
        graceful_timeout=graceful_timeout,
    )
    with _return_after_signal():
        await server.serve()
    log.info("server stopped; closing the projections and the store")


async def project(orders_app: OrdersApp) -> None:
    """Run the projections until SIGINT or SIGTERM (or until one of them stops on an error;
    closing ``orders_app`` then raises that error)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        orders_app.start_projections()
        names = ", ".join(r.projection.name for r in orders_app.runners)
        log.info("projections running: %s", names)
        while orders_app.projections_running and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        log.info("stopping projections" if stop.is_set() else "a projection stopped")
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _return_after_signal() -> Iterator[None]:
    # uvicorn handles SIGINT/SIGTERM while it serves, then restores the previous handlers and
    # raises the signal again. With the default handlers that would kill the process before
    # the projections and the store are closed; these handlers let serve() return instead.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ignore(sig: int, frame: FrameType | None) -> None:
        return None

    previous = {sig: signal.signal(sig, ignore) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
