"""Many clients at once: one hot order and many orders. Afterwards the read model holds exactly
what the acknowledged responses imply: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx

from tests.e2e.conftest import StartServer

CLIENTS = 32


class Ledger:
    """What the service acknowledged."""

    def __init__(self) -> None:
        self.revenue = Decimal("0.00")
        self.orders: dict[str, Decimal] = {}
        self.submitted: set[str] = set()
        self.items: Counter[str] = Counter()
        self.tokens: list[int] = []
        self.conflicts = 0


async def send(client: httpx.AsyncClient, ledger: Ledger, path: str, body: Any = None) -> bool:
    """POST until acknowledged; a 409 conflict (nothing written) is retried as it says."""
    key = {"Idempotency-Key": str(uuid.uuid4())}
    for _ in range(50):
        response = await client.post(path, json=body, headers=key)
        if response.status_code == 409 and response.json()["type"].endswith("concurrency-conflict"):
            assert response.headers["Retry-After"] == "1"
            ledger.conflicts += 1
            await asyncio.sleep(random.uniform(0.0, 0.05))  # shorter than asked: a stress test
            continue
        assert response.status_code in (200, 201), response.text
        ledger.tokens.append(int(response.headers["Consistency-Token"]))
        return True
    return False


def item(n: int) -> dict[str, Any]:
    return {"name": f"Part {n}", "price": f"{n % 97}.{n % 100:02d}", "quantity": n % 3 + 1}


def amount(body: dict[str, Any]) -> Decimal:
    return Decimal(body["price"]) * body["quantity"]


async def hammer_one_order(client: httpx.AsyncClient, ledger: Ledger, order_id: str) -> None:
    async def one_client(c: int) -> None:
        for n in range(8):
            body = item(c * 8 + n)
            if await send(client, ledger, f"/orders/{order_id}/items", body):
                ledger.items[order_id] += 1
                ledger.orders[order_id] += amount(body)
                ledger.revenue += amount(body)

    await asyncio.gather(*(one_client(c) for c in range(CLIENTS)))


async def many_orders(client: httpx.AsyncClient, ledger: Ledger, prefix: str) -> None:
    gate = asyncio.Semaphore(CLIENTS)

    async def one_order(n: int) -> None:
        async with gate:
            order_id = f"{prefix}-{n}"
            lines = [item(n), item(n + 1)]
            body = {"order_id": order_id, "customer_id": f"C-{n % 5}", "items": lines}
            assert await send(client, ledger, "/orders", body)
            ledger.orders[order_id] = sum((amount(line) for line in lines), Decimal("0.00"))
            ledger.items[order_id] = 2
            ledger.revenue += ledger.orders[order_id]
            extra = item(n + 2)
            assert await send(client, ledger, f"/orders/{order_id}/items", extra)
            ledger.orders[order_id] += amount(extra)
            ledger.items[order_id] += 1
            ledger.revenue += amount(extra)
            if n % 2 == 0:
                assert await send(client, ledger, f"/orders/{order_id}/submit")
                ledger.submitted.add(order_id)

    await asyncio.gather(*(one_order(n) for n in range(96)))


async def test_many_clients_hammer_one_order_and_many_orders(start_server: StartServer) -> None:
    server = start_server()
    ledger = Ledger()
    limits = httpx.Limits(max_connections=CLIENTS * 2, keepalive_expiry=server.KEEPALIVE_EXPIRY)
    async with server.async_client(limits=limits) as client:
        hot = "ORD-HOT"
        assert await send(
            client, ledger, "/orders", {"order_id": hot, "customer_id": "C-hot", "items": []}
        )
        ledger.orders[hot] = Decimal("0.00")
        await asyncio.gather(
            hammer_one_order(client, ledger, hot), many_orders(client, ledger, "ORD-MANY")
        )
        token = {"Consistency-Token": str(max(ledger.tokens))}

        dashboard = (await client.get("/stats/dashboard", headers=token)).json()
        count = len(ledger.orders)
        assert dashboard["total_orders"] == count
        assert dashboard["total_revenue"] == str(ledger.revenue)
        assert dashboard["submitted_orders"] == len(ledger.submitted)
        assert dashboard["draft_orders"] == count - len(ledger.submitted)
        average = (ledger.revenue / count).quantize(Decimal("0.01"))
        assert dashboard["average_order_value"] == str(average)

        daily = (await client.get("/stats/daily", headers=token)).json()["days"]
        assert sum(day["count"] for day in daily) == len(ledger.submitted)
        submitted_revenue = sum((ledger.orders[o] for o in ledger.submitted), Decimal("0.00"))
        assert sum(Decimal(day["revenue"]) for day in daily) == submitted_revenue

        hot_order = (await client.get(f"/orders/{hot}", headers=token)).json()
        assert hot_order["item_count"] == ledger.items[hot]
        assert hot_order["total"] == str(ledger.orders[hot])
        events = (await client.get(f"/orders/{hot}/events")).json()["events"]
        assert len(events) == 1 + ledger.items[hot]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))

        for order_id in random.sample(sorted(ledger.orders), 10):
            order = (await client.get(f"/orders/{order_id}", headers=token)).json()
            assert order["total"] == str(ledger.orders[order_id])
            assert order["item_count"] == ledger.items[order_id]
            expected = "submitted" if order_id in ledger.submitted else "draft"
            assert order["status"] == expected
