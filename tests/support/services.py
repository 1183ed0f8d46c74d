"""``orders`` processes for end-to-end and fault tests: start one, find where it serves, talk to
it over raw sockets (requests held half-sent), stop or kill it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.waiting import DEADLINE, until_sync

__all__ = [
    "ORDERS",
    "Process",
    "kill_all",
    "read_response",
    "received_by_server",
    "refused",
    "serve",
]

ORDERS = str(Path(sys.executable).with_name("orders"))


class Process:
    """An ``orders`` subprocess with its stderr (JSON log lines) in a file."""

    def __init__(self, *args: str, cwd: Path, user: str | None = None) -> None:
        self.log = cwd / f"orders-{args[0]}-{time.monotonic_ns()}.log"
        # A read with a token waits for the projections up to this long: only a broken
        # service takes that long, a busy machine never does.
        env = {**os.environ, "CQRSKIT_CONSISTENCY_TIMEOUT": str(DEADLINE)}
        env.pop("CQRSKIT_DB", None)
        with self.log.open("wb") as sink:
            self.popen = subprocess.Popen(
                [ORDERS, *args],
                cwd=cwd,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                user=user,
            )

    def lines(self) -> list[dict[str, object]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+)/")


def serve(
    processes: list[Process], tmp_path: Path, db_url: str, *extra: str, user: str | None = None
) -> str:
    """Start ``orders serve`` on a port the system chooses (it says which) and wait until it
    answers (as ``user``, if given)."""
    process = Process("serve", "--port", "0", "--db", db_url, *extra, cwd=tmp_path, user=user)
    processes.append(process)

    def announced() -> re.Match[str] | None:
        assert process.popen.poll() is None, process.log.read_text()
        return SERVING.search(process.log.read_text())

    until_sync(lambda: announced() is not None, what="orders serve listening")
    found = announced()
    assert found is not None
    url = found[1]
    with httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
    return url


def received_by_server(server_port: int, client: socket.socket) -> bool:
    """Whether the server has accepted ``client``'s connection and read all it was sent.

    Until the process reads them, bytes wait in the kernel's receive queue of the server-side
    socket (even before ``accept``): an empty queue means the request is in the server's hands.
    """
    client_port = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and (
            int(remote.split(":")[1], 16) == client_port
        ):
            return int(queues.split(":")[1], 16) == 0
    return False


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Read an HTTP response to the end of the connection: (status, JSON body)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def kill_all(processes: list[Process]) -> None:
    """Kill those of ``processes`` still running (what a test leaves behind when it fails)."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)
