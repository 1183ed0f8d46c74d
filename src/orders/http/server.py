"""Running the HTTP service: uvicorn with a graceful shutdown.

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
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from orders.app import OrdersApp
from orders.http.api import create_api
from orders.http.sse import StreamSettings

__all__ = ["OrdersServer", "build_server", "event_loop_factory", "serve"]

log = logging.getLogger("orders.http")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OrdersServer(uvicorn.Server):
    """uvicorn's server, which says where to connect once its socket listens (if ``announce``:
    the port may have been chosen by the system)."""

    announce = False
    #: called when shutdown begins, before uvicorn waits for open responses to finish
    on_shutdown: Callable[[], None] = staticmethod(lambda: None)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.on_shutdown()  # ends the event streams, which would never finish by themselves
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.announce or self.should_exit:
            return
        for listener in self.servers:
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"Orders is serving on http://{shown}:{port}/ "
                    "(live dashboard; API docs: /docs)",
                    flush=True,
                )
                return


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the ``service`` extra installs it), as
    uvicorn's ``loop="auto"`` chooses; None (asyncio's own) otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_server(
    orders_app: OrdersApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    projections_in_process: bool = True,
    graceful_timeout: int = 30,
    stream_settings: StreamSettings | None = None,
) -> OrdersServer:
    """A uvicorn server for the API over ``orders_app`` (not started)."""
    api = create_api(
        orders_app, projections_in_process=projections_in_process, stream_settings=stream_settings
    )
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
    server = OrdersServer(config)
    server.on_shutdown = api.state.service.streams.close
    return server


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
    server.announce = True
    with _return_after_signal():
        await server.serve()
    log.info("server stopped; closing the projections and the store")


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
