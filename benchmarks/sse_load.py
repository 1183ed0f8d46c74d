"""Live streams under load: command latency at a fixed rate with and without SSE clients.

``python -m benchmarks.sse_load [--clients 100] [--rate 1000] [--seconds 10]`` starts
``orders serve`` on a fresh SQLite database in its own process, sends ``POST /orders`` at a fixed
rate (open loop: a late answer does not delay the next request, and latency counts from the
moment a request was due), first with no stream open, then with ``--clients`` clients on
``GET /events/stream`` (in another process). Every client must receive every event of the run;
the time from an event's ``recorded_at`` to its arrival at a client is its delivery time. The
figures go to ``benchmarks/sse_results.json`` and into ``benchmarks/RESULTS.md`` (the section
between the ``live-streams`` markers; ``benchmarks/report.py`` keeps it when it rewrites the
file). Target: the command p99 with the clients within 2x the p99 without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.http_bench import free_port, start_server, stop_server
from benchmarks.http_load import create_request, read_response
from benchmarks.measure import percentile

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "sse_results.json"
CONNECTIONS = 32  # keep-alive command connections; the rate is spread over them


async def send_commands(port: int, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """``rate`` commands/s for ``seconds``; each latency from the moment it was due."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    last_position = 0
    start = time.perf_counter() + 0.2
    total = int(rate * seconds)

    async def connection(index: int) -> None:
        nonlocal last_position
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(index, total, CONNECTIONS):
                due = start + n / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(create_request(f"{tag}-{n}", f"c{n % 50}"))
                status, body = await read_response(reader)
                latencies.append((time.perf_counter() - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    position = int(json.loads(body)["consistency_token"])
                    last_position = max(last_position, position)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))
    elapsed = time.perf_counter() - began
    return {
        "sent": total,
        "statuses": statuses,
        "achieved_rate": total / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "last_position": last_position,
    }


async def read_streams(port: int, clients: int, after: int) -> dict[str, Any]:
    """``clients`` readers of the event stream from ``after``; each counts the events it gets
    and the delivery time of each, until the position given on stdin is reached (it prints
    ``ready`` once every client is connected)."""
    counts = [0] * clients
    delays: list[float] = []
    last = [after] * clients
    target: list[int | None] = [None]

    async def client(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET /events/stream?after={after} HTTP/1.1\r\nHost: bench\r\n\r\n"
        writer.write(request.encode())
        await reader.readuntil(b"\r\n\r\n")
        try:
            while target[0] is None or last[index] < target[0]:
                line = await reader.readline()
                if not line:
                    raise RuntimeError(f"stream {index} closed by the server")
                if line.startswith(b"id: "):
                    position = int(line[4:])
                    assert position > last[index], "an event repeated or out of order"
                    last[index] = position
                    counts[index] += 1
                elif line.startswith(b"data: ") and index % 10 == 0:
                    recorded = line.split(b'"recorded_at":"', 1)[1].split(b'"', 1)[0]
                    sent = datetime.fromisoformat(recorded.decode()).timestamp()
                    delays.append((time.time() - sent) * 1000)
        finally:
            writer.close()

    async def watch_target() -> None:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        target[0] = int(line)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0.5)  # let every client connect before the load starts
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(watch_target(), *tasks), timeout=120)
    return {
        "clients": clients,
        "events_per_client": sorted(set(counts)),
        "delivery_p50_ms": percentile(delays, 50),
        "delivery_p99_ms": percentile(delays, 99),
    }


def run_readers(port: int, clients: int, after: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.sse_load",
        "--readers",
        str(clients),
        "--port",
        str(port),
        "--after",
        str(after),
    ]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def measure(clients: int, rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        server = start_server(f"sqlite:///{Path(work) / 'orders.db'}", port, Path(work) / "log")
        try:
            warm = asyncio.run(send_commands(port, rate, 2.0, "warm"))
            baseline = asyncio.run(send_commands(port, rate, seconds, "base"))
            readers = run_readers(port, clients, baseline["last_position"])
            assert readers.stdout is not None
            if readers.stdout.readline() != b"ready\n":
                raise RuntimeError("the stream readers did not start")
            loaded = asyncio.run(send_commands(port, rate, seconds, "live"))
            target = f"{loaded['last_position']}\n".encode()
            out, _ = readers.communicate(target, timeout=180)
            if readers.returncode != 0:
                raise RuntimeError("a stream reader failed")
            streams = json.loads(out)
        finally:
            stop_server(server)
    expected = loaded["sent"]
    verified = (
        streams["events_per_client"] == [expected]
        and loaded["statuses"] == {201: expected}
        and baseline["statuses"] == {201: baseline["sent"]}
    )
    return {
        "warm_up": warm["sent"],
        "rate": rate,
        "seconds": seconds,
        "without_clients": baseline,
        "with_clients": loaded,
        "streams": streams,
        "verified": verified,
        "p99_ratio": loaded["p99_ms"] / baseline["p99_ms"],
        "load_average": list(os.getloadavg()),
    }


MARK_START = "<!-- live-streams -->"
MARK_END = "<!-- /live-streams -->"


def section(result: dict[str, Any]) -> str:
    base, live, streams = result["without_clients"], result["with_clients"], result["streams"]
    met = "met" if result["verified"] and result["p99_ratio"] <= 2 else "MISSED"
    clients = streams["clients"]
    return "\n".join(
        [
            MARK_START,
            "## Live streams under load",
            "",
            f"`python -m benchmarks.sse_load`: `POST /orders` at {result['rate']:,.0f}/s for "
            f"{result['seconds']:.0f} s (open loop, {CONNECTIONS} connections, latency from "
            f"the moment each request was due) on SQLite, first with no stream open, then with "
            f"{clients} clients reading `GET /events/stream` (in another process; each "
            f"received all {live['sent']:,} events, in order, once: "
            f"{'verified' if result['verified'] else 'NOT verified'}). Load average at the "
            f"end: {' / '.join(f'{v:.2f}' for v in result['load_average'])}.",
            "",
            f"| figure | no clients | {clients} SSE clients | target | |",
            "| --- | ---: | ---: | --- | --- |",
            f"| commands/s achieved | {base['achieved_rate']:,.0f} | "
            f"{live['achieved_rate']:,.0f} |  |  |",
            f"| command p50 (ms) | {base['p50_ms']:.1f} | {live['p50_ms']:.1f} |  |  |",
            f"| command p99 (ms) | {base['p99_ms']:.1f} | {live['p99_ms']:.1f} | ≤ 2x "
            f"({result['p99_ratio']:.2f}x) | {met} |",
            f"| event delivery p50 (ms, recorded → client) | | "
            f"{streams['delivery_p50_ms']:.1f} |  |  |",
            f"| event delivery p99 (ms) | | {streams['delivery_p99_ms']:.1f} |  |  |",
            MARK_END,
        ]
    )


def write_section(text: str, results_md: Path = HERE / "RESULTS.md") -> None:
    document = results_md.read_text() if results_md.exists() else ""
    if MARK_START in document:
        before = document.split(MARK_START, 1)[0]
        after = document.split(MARK_END, 1)[1]
        document = before + text + after
    else:
        document = document.rstrip("\n") + "\n\n" + text + "\n"
    results_md.write_text(document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse_load", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--readers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--after", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.readers is not None:
        streams = asyncio.run(read_streams(args.port, args.readers, args.after))
        print(json.dumps(streams))
        return 0
    result = measure(args.clients, args.rate, args.seconds)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        write_section(section(result))
    return 0 if result["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
