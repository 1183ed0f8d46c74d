"""A small HTTP/1.1 load generator: asyncio, keep-alive connections, several processes.

Each process opens ``--connections`` connections to the server and sends requests on each,
one at a time, until ``--seconds`` are up; it prints one JSON line with every request's
latency and the status counts. A raw client keeps the generator's own cost per request
small, so that on a small machine the server, not the tool, sets the pace.

``python -m benchmarks.http_load --port 8000 --mode command|query|constant --connections 16
--seconds 5 --worker 0 [--ids FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path

HEADER_END = b"\r\n\r\n"


def create_request(order_id: str, customer: str) -> bytes:
    body = json.dumps(
        {
            "order_id": order_id,
            "customer_id": customer,
            "items": [
                {"name": "widget", "price": "12.25", "quantity": 2},
                {"name": "gadget", "price": "9.99", "quantity": 1},
            ],
        }
    ).encode()
    head = (
        "POST /orders HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get_request(order_id: str) -> bytes:
    return f"GET /orders/{order_id} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


CONSTANT_REQUEST = b"GET /constant HTTP/1.1\r\nHost: bench\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(HEADER_END)
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding":
            raise RuntimeError("chunked responses are not supported by this load generator")
    body = await reader.readexactly(length) if length else b""
    return status, body


async def connection(
    port: int, mode: str, name: str, deadline: float, ids: list[str], out: dict[str, list]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            if mode == "command":
                order_id = f"{name}-{n}"
                request = create_request(order_id, f"hc{n % 50}")
            elif mode == "constant":
                order_id = "ORD-constant"
                request = CONSTANT_REQUEST
            else:
                order_id = random.choice(ids)
                request = get_request(order_id)
            start = time.perf_counter()
            writer.write(request)
            status, body = await read_response(reader)
            out["latencies"].append((time.perf_counter() - start) * 1000)
            out["statuses"].append(status)
            if mode == "command" and status == 201:
                out["created"].append(order_id)
            elif mode != "command" and (status != 200 or order_id.encode() not in body):
                out["bad"].append(order_id)
            n += 1
    finally:
        writer.close()


async def run(args: argparse.Namespace, ids: list[str]) -> dict[str, object]:
    out: dict[str, list] = {"latencies": [], "statuses": [], "created": [], "bad": []}
    start = time.perf_counter()
    deadline = start + args.seconds
    await asyncio.gather(
        *(
            connection(args.port, args.mode, f"h{args.worker}x{c}", deadline, ids, out)
            for c in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - start
    return {
        "elapsed": elapsed,
        "latencies_ms": out["latencies"],
        "statuses": dict(Counter(out["statuses"])),
        "created": out["created"],
        "bad": out["bad"][:20],
        "bad_count": len(out["bad"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_load")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("command", "query", "constant"), required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--ids", help="JSON file with the order ids to query")
    args = parser.parse_args()
    ids = json.loads(Path(args.ids).read_text()) if args.ids else []
    print(json.dumps(asyncio.run(run(args, ids))))


if __name__ == "__main__":
    main()
