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
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from orders.app import OrdersApp
from orders.http.api import create_api
from orders.http.sse import StreamSettings

__all__ = ["OrdersServer", "build_server", "event_loop_factory", "serve", "serve_in_workers"]

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
    listener: socket.socket | None = None,
) -> None:
    """Serve ``orders_app`` over HTTP until SIGINT or SIGTERM, then return (the caller closes
    ``orders_app``). With ``run_projections`` the projections run in this process. Given a
    ``listener`` (a listening socket shared by the workers of :func:`serve_in_workers`), it
    accepts connections there instead of binding ``host:port``, and announces nothing."""
    if run_projections:
        orders_app.start_projections()
    server = build_server(
        orders_app,
        host=host,
        port=port,
        projections_in_process=run_projections,
        graceful_timeout=graceful_timeout,
    )
    server.announce = listener is None
    with _return_after_signal():
        await server.serve(sockets=None if listener is None else [listener])
    log.info("server stopped; closing the projections and the store")


def serve_in_workers(
    worker_command: Callable[[int, int], list[str]], workers: int, host: str, port: int
) -> int:
    """Serve from ``workers`` processes sharing one listening socket on ``host:port``; return
    an exit code once they have all exited.

    Worker ``i`` runs ``worker_command(i, fd)``, ``fd`` being the listening socket's file
    descriptor, which it inherits. SIGINT and SIGTERM are passed on to every worker (each
    finishes its requests and closes its app, as one ``orders serve`` does); a worker that
    exits by itself stops the others, and its exit code is returned.
    """
    listener = socket.create_server((host, port), backlog=2048)
    host, port = listener.getsockname()[:2]
    fd = listener.fileno()
    # own process groups: a Ctrl+C in the terminal reaches the workers once, through here
    children = [
        subprocess.Popen(worker_command(index, fd), pass_fds=(fd,), process_group=0)
        for index in range(workers)
    ]
    listener.close()  # the workers hold it now
    shown = f"[{host}]" if ":" in host else host
    print(
        f"Orders is serving on http://{shown}:{port}/ "
        f"(live dashboard; API docs: /docs; {workers} worker processes)",
        flush=True,
    )
    return _wait_for_workers(children)


def _wait_for_workers(children: list[subprocess.Popen[bytes]]) -> int:
    # Reaped here with os.wait() only (Popen.poll() would reap behind its back), so a pid in
    # `running` is never one the system reused.
    running = {child.pid: child for child in children}
    stopping = False
    code = 0

    def stop(sig: int, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(running):
            os.kill(pid, sig)

    previous = {sig: signal.signal(sig, stop) for sig in _SIGNALS}
    try:
        while running:
            pid, status = os.wait()
            child = running.pop(pid, None)
            if child is None:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("worker %d exited with %d; stopping the others", pid, child.returncode)
                code = child.returncode or 1
                stop(signal.SIGTERM)
            elif child.returncode != 0 and code == 0:
                code = child.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


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
