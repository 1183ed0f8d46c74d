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
from benchmarks.sections import write_section

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
        # Client 0 reads frame by frame and times deliveries; the others count frames in big
        # chunks, so that the readers' own work (on the same two cores) stays small.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        request = f"GET /events/stream?after={after} HTTP/1.1\r\nHost: bench\r\n\r\n"
        writer.write(request.encode())
        await reader.readuntil(b"\r\n\r\n")
        tail = b""
        try:
            while target[0] is None or last[index] < target[0]:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    raise RuntimeError(f"stream {index} closed by the server")
                data = tail + chunk
                complete = data.rfind(b"\n\n") + 2
                frames, tail = data[:complete], data[complete:]
                counts[index] += frames.count(b"\nid: ") + frames.startswith(b"id: ")
                ids = frames.rsplit(b"id: ", 1)
                if len(ids) == 2:
                    position = int(ids[1].split(b"\n", 1)[0])
                    assert position > last[index], "an event repeated or out of order"
                    last[index] = position
                if index == 0:
                    now = time.time()
                    for stamp in frames.split(b'"recorded_at":"')[1:]:
                        sent = datetime.fromisoformat(stamp.split(b'"', 1)[0].decode())
                        delays.append((now - sent.timestamp()) * 1000)
        finally:
            writer.close()

    async def watch_target() -> None:
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        target[0] = int(line)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0.5)  # let every client connect before the load starts
    print("ready", flush=True)
    async with asyncio.timeout(120):
        await asyncio.gather(watch_target(), *tasks)
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


def section(results: list[dict[str, Any]]) -> str:
    """The RESULTS.md section for one run per rate."""
    first = results[0]
    clients, seconds = first["streams"]["clients"], first["seconds"]
    lines = [
        MARK_START,
        "## Live streams under load",
        "",
        f"`python -m benchmarks.sse_load`: `POST /orders` at a fixed rate for {seconds:.0f} s "
        f"(open loop, {CONNECTIONS} connections, latency from the moment each request was due) "
        f"on SQLite, first with no stream open, then with {clients} clients reading "
        "`GET /events/stream` (in another process). Verified: every client received every "
        "event of its run, in order, once. Delivery: from an event's `recorded_at` to its "
        "arrival at a client. The load generator, the clients and the server share the "
        "machine's 2 cores; the load average is the machine's at the end of each run.",
        "",
        "| rate asked | cmd/s achieved (none / clients) | p50 ms (none / clients) | "
        "p99 ms (none / clients) | p99 ratio (≤ 2) | delivery p50 / p99 ms | verified | "
        "load average |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for result in results:
        base, live, streams = result["without_clients"], result["with_clients"], result["streams"]
        met = "met" if result["verified"] and result["p99_ratio"] <= 2 else "MISSED"
        lines.append(
            f"| {result['rate']:,.0f}/s | {base['achieved_rate']:,.0f} / "
            f"{live['achieved_rate']:,.0f} | {base['p50_ms']:,.1f} / {live['p50_ms']:,.1f} | "
            f"{base['p99_ms']:,.1f} / {live['p99_ms']:,.1f} | {result['p99_ratio']:.2f} {met} | "
            f"{streams['delivery_p50_ms']:,.0f} / {streams['delivery_p99_ms']:,.0f} | "
            f"{'yes' if result['verified'] else 'NO'} | "
            f"{' / '.join(f'{v:.1f}' for v in result['load_average'])} |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse_load", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument(
        "--rate", type=float, action="append", help="commands/s; repeat for several runs"
    )
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
    results = [measure(args.clients, rate, args.seconds) for rate in args.rate or [1000.0]]
    print(json.dumps(results, indent=2))
    if not args.no_write:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        write_section(section(results), MARK_START, MARK_END)
    return 0 if all(result["verified"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
