"""A real uvicorn server for end-to-end tests, run in a background thread on a free port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import uvicorn

from cqrskit import Projection
from cqrskit.backends import open_backend
from orders.app import Settings, assemble_app, build_app
from orders.http.server import build_server
from orders.http.sse import StreamSettings


def free_port() -> int:
    """A port that was free a moment ago. Another process may take it before it is bound:
    only for a process that must keep one port across restarts (tests/scaleout); a server
    started once binds port 0 or is handed a bound socket (:func:`listening_socket`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening_socket() -> socket.socket:
    """A TCP socket on a port the system chose, already listening, for the server to use.

    Binding it here and handing it over (rather than asking for a free port and letting the
    server bind it later) leaves no moment in which another process can take the port.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@dataclass
class ServerThread:
    """``orders`` served over HTTP by uvicorn in its own thread and event loop.

    The test talks to it over TCP only (``url``), like any other client.
    """

    settings: Settings
    run_projections: bool = True
    stream_settings: StreamSettings | None = None
    #: the projections this release declares (default: the Orders service's)
    projections: Sequence[Projection] | None = None
    sock: socket.socket = field(default_factory=listening_socket)
    error: BaseException | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self._server is not None and self._server.started):
            if self.error is not None:
                raise RuntimeError("the server failed to start") from self.error
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the server did not stop"
        if self.error is not None:
            raise RuntimeError("the server failed") from self.error

    # Clients drop idle connections well before uvicorn does (5 s): reusing a keep-alive
    # connection just as the server closes it fails the request with a ReadError.
    KEEPALIVE_EXPIRY = 2.0

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("limits", httpx.Limits(keepalive_expiry=self.KEEPALIVE_EXPIRY))
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    def async_client(self, **kwargs: object) -> httpx.AsyncClient:
        kwargs.setdefault("limits", httpx.Limits(keepalive_expiry=self.KEEPALIVE_EXPIRY))
        return httpx.AsyncClient(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self.error = error

    async def _main(self) -> None:
        if self.projections is None:
            orders_app = await build_app(self.settings)
        else:
            backend = await open_backend(self.settings.db_url)
            orders_app = await assemble_app(self.settings, backend, projections=self.projections)
        try:
            if self.run_projections:
                orders_app.start_projections()
            self._server = build_server(
                orders_app,
                port=self.port,
                projections_in_process=self.run_projections,
                graceful_timeout=10,
                stream_settings=self.stream_settings,
            )
            await self._server.serve(sockets=[self.sock])
        finally:
            await orders_app.close()
