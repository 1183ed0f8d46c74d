"""HTTP figures: ``orders serve`` in its own process, load from :mod:`benchmarks.http_load`
processes, for a command (``POST /orders``) and a query (``GET /orders/{id}``); then the same
load on a bare FastAPI app (:mod:`benchmarks.http_bare`), whose requests/s the two are given as
a share of."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.measure import check, percentile

if TYPE_CHECKING:
    from benchmarks.suite import Suite

LOAD_WORKERS = int(os.environ.get("BENCH_HTTP_WORKERS", "1"))  # 2 cores: server + 1 load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def start_server(
    url: str, port: int, log: Path, command: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """``orders serve`` over ``url`` (or ``command``), once it answers ``/healthz``."""
    orders = Path(sys.executable).with_name("orders")
    command = command or [str(orders), "serve", "--port", str(port), "--db", url]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            get_json(port, "/healthz")
            return server
        except (urllib.error.URLError, ConnectionError) as error:
            if server.poll() is not None or time.monotonic() > deadline:
                stop_server(server)
                output = log.read_text()[-2000:]
                raise RuntimeError(f"orders serve did not start: {output}") from error
            time.sleep(0.2)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def load(
    port: int, mode: str, connections: int, seconds: float, ids: Path | None
) -> dict[str, Any]:
    """Run the load processes at once; their results merged."""
    per_worker = max(1, connections // LOAD_WORKERS)
    procs = []
    for worker in range(LOAD_WORKERS):
        command = [
            sys.executable,
            "-m",
            "benchmarks.http_load",
            "--port",
            str(port),
            "--mode",
            mode,
            "--connections",
            str(per_worker),
            "--seconds",
            str(seconds),
            "--worker",
            str(worker),
        ]
        if ids is not None:
            command += ["--ids", str(ids)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    merged: dict[str, Any] = {
        "latencies_ms": [],
        "statuses": {},
        "created": [],
        "bad_count": 0,
        "elapsed": 0.0,
    }
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=seconds + 120)
        check(proc.returncode == 0, f"load generator failed: {stderr.decode()[-2000:]}")
        part = json.loads(stdout)
        merged["latencies_ms"] += part["latencies_ms"]
        merged["created"] += part["created"]
        merged["bad_count"] += part["bad_count"]
        merged["elapsed"] = max(merged["elapsed"], part["elapsed"])
        for status, count in part["statuses"].items():
            merged["statuses"][status] = merged["statuses"].get(status, 0) + count
    return merged


def bare_load(suite: Suite, connections: int, seconds: float) -> dict[str, Any]:
    """The load of the HTTP figures on the bare FastAPI app (``GET /constant``)."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.http_bare", "--port", str(port)]
    server = start_server("", port, suite.dbs.scratch / "serve-bare.log", command)
    try:
        result = load(port, "constant", connections, seconds, None)
    finally:
        stop_server(server)
    check(set(result["statuses"]) == {"200"}, f"bare app statuses {result['statuses']}")
    check(result["bad_count"] == 0, "the bare app answered another document")
    return result


def wait_for_orders(port: int, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        total = get_json(port, "/stats/dashboard")["total_orders"]
        if total == count:
            return
        check(time.monotonic() < deadline, f"read model has {total} orders, not {count}")
        time.sleep(0.1)


def http_figures(suite: Suite, backend: str) -> None:
    sizes = suite.sizes
    figures = [
        f"http_{kind}_{what}" for kind in ("command", "query") for what in ("rps", "p50", "p99")
    ]
    figures += ["http_bare_rps", "http_bare_p99", "http_command_share", "http_query_share"]

    def body() -> None:
        db = suite.fresh(backend, "http")
        port = free_port()
        server = start_server(db.url, port, suite.dbs.scratch / f"serve-{backend}.log")
        try:
            commands = load(port, "command", sizes.http_connections, sizes.http_seconds, None)
            check(set(commands["statuses"]) == {"201"}, f"statuses {commands['statuses']}")
            created = commands["created"]
            wait_for_orders(port, len(created), 120)
            ids = suite.dbs.scratch / f"ids-{backend}.json"
            ids.write_text(json.dumps(created[:20_000]))
            queries = load(port, "query", sizes.http_connections, sizes.http_seconds, ids)
            check(set(queries["statuses"]) == {"200"}, f"statuses {queries['statuses']}")
            check(queries["bad_count"] == 0, "a query answered with another order")
        finally:
            stop_server(server)
        suite.dbs.drop(db)
        bare = bare_load(suite, sizes.http_connections, sizes.http_seconds)
        note = f"{sizes.http_connections} connections, {LOAD_WORKERS} load process(es)"
        bare_rps = len(bare["latencies_ms"]) / bare["elapsed"]
        for kind, result in (("command", commands), ("query", queries)):
            suite.record(
                f"http_{kind}_share",
                backend,
                "cqrskit",
                len(result["latencies_ms"]) / result["elapsed"] / bare_rps,
                samples=len(result["latencies_ms"]),
                note=f"of the bare FastAPI app's {bare_rps:,.0f} req/s, measured just after",
            )
        suite.record(
            "http_bare_rps",
            backend,
            "cqrskit",
            bare_rps,
            samples=len(bare["latencies_ms"]),
            note="bare FastAPI app, constant JSON document, same uvicorn settings and load",
        )
        suite.record(
            "http_bare_p99",
            backend,
            "cqrskit",
            percentile(bare["latencies_ms"], 99),
            samples=len(bare["latencies_ms"]),
        )
        for kind, result in (("command", commands), ("query", queries)):
            latencies = result["latencies_ms"]
            suite.record(
                f"http_{kind}_rps",
                backend,
                "cqrskit",
                len(latencies) / result["elapsed"],
                samples=len(latencies),
                note=note,
            )
            for q in (50, 99):
                suite.record(
                    f"http_{kind}_p{q}",
                    backend,
                    "cqrskit",
                    percentile(latencies, q),
                    samples=len(latencies),
                )

    suite.section("HTTP (orders serve)", figures, backend, "cqrskit", body)
