"""The yardstick for the HTTP figures: a bare FastAPI app that answers ``GET /constant`` with a
constant JSON document, served by uvicorn with the same settings as ``orders serve``
(:func:`orders.http.server.build_server`: no lifespan, no access log, no server header).

``python -m benchmarks.http_bare --port 8000``
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

#: about the size of an order document (``GET /orders/{id}``)
CONSTANT: dict[str, Any] = {
    "order_id": "ORD-constant",
    "customer_id": "customer-1",
    "status": "submitted",
    "items": [
        {"name": "widget", "price": "12.25", "quantity": 2},
        {"name": "gadget", "price": "9.99", "quantity": 1},
    ],
    "total": "34.49",
    "item_count": 3,
    "created_at": "2026-01-01T00:00:00+00:00",
    "submitted_at": "2026-01-01T00:00:01+00:00",
}


def create_app() -> FastAPI:
    api = FastAPI()

    @api.get("/constant")
    async def constant() -> dict[str, Any]:
        return CONSTANT

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
