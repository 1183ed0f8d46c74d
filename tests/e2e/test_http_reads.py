"""Read-your-writes with consistency tokens, and pagination, through real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread

PEN = {"name": "Pen", "price": "1.25", "quantity": 1}


def token_of(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (200, 201), response.text
    return {"Consistency-Token": response.headers["Consistency-Token"]}


def test_a_read_with_the_token_always_sees_the_write(server: ServerThread) -> None:
    customer = new_id("C")
    with server.client() as client:
        for n in range(50):
            order_id = f"{customer}-{n}"
            created = client.post(
                "/orders", json={"order_id": order_id, "customer_id": customer, "items": [PEN]}
            )
            seen = client.get(f"/orders/{order_id}", headers=token_of(created))
            assert seen.status_code == 200, seen.text
            assert seen.json()["item_count"] == 1

            added = client.post(f"/orders/{order_id}/items", json=PEN)
            seen = client.get(f"/orders/{order_id}", headers=token_of(added))
            assert seen.json()["item_count"] == 2
            assert seen.json()["total"] == "2.50"

            page = client.get(
                f"/customers/{customer}/orders", headers=token_of(added), params={"limit": 500}
            )
            assert len(page.json()["orders"]) == n + 1

            if n % 5 == 0:
                submitted = client.post(f"/orders/{order_id}/submit")
                order = client.get(f"/orders/{order_id}", headers=token_of(submitted)).json()
                assert order["status"] == "submitted"


async def test_reads_with_tokens_under_concurrent_writes(server: ServerThread) -> None:
    customer = new_id("C")

    async def write_then_read(client: httpx.AsyncClient, n: int) -> None:
        order_id = f"{customer}-{n}"
        created = await client.post(
            "/orders", json={"order_id": order_id, "customer_id": customer, "items": [PEN]}
        )
        seen = await client.get(f"/orders/{order_id}", headers=token_of(created))
        assert seen.status_code == 200, seen.text
        assert seen.json()["item_count"] == 1
        for expected in range(2, 5):  # this coroutine is the order's only writer: exact counts
            added = await client.post(f"/orders/{order_id}/items", json=PEN)
            seen = await client.get(f"/orders/{order_id}", headers=token_of(added))
            assert seen.status_code == 200, seen.text
            assert seen.json()["item_count"] == expected

    async with server.async_client() as client:
        await asyncio.gather(*(write_then_read(client, n) for n in range(16)))


def walk(client: httpx.Client, path: str, limit: int, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["orders"]) <= limit
        seen.extend(o["order_id"] for o in page["orders"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        assert pages < 10_000


def test_walking_every_page_gives_every_order_once_in_order(server: ServerThread) -> None:
    customer = new_id("C")
    with server.client() as client:
        expected = []
        last = None
        for n in range(23):
            order_id = f"{customer}-{n:02d}"
            last = client.post(
                "/orders", json={"order_id": order_id, "customer_id": customer, "items": [PEN]}
            )
            expected.append(order_id)
        assert last is not None
        caught_up = client.get("/stats/dashboard", headers=token_of(last))  # the read model
        assert caught_up.status_code == 200, caught_up.text

        for limit in (1, 5, 7, 23, 50):
            assert walk(client, f"/customers/{customer}/orders", limit) == expected

        drafts = walk(client, "/orders", 7, status="draft")
        assert len(drafts) == len(set(drafts))
        assert [o for o in drafts if o.startswith(customer)] == expected

        for order_id in expected[::2]:
            last = client.post(f"/orders/{order_id}/submit")
        caught_up = client.get("/stats/dashboard", headers=token_of(last))
        assert caught_up.status_code == 200, caught_up.text
        submitted = walk(client, "/orders", 4, status="submitted")
        assert len(submitted) == len(set(submitted))
        assert [o for o in submitted if o.startswith(customer)] == expected[::2]
        drafts = walk(client, "/orders", 9, status="draft")
        assert [o for o in drafts if o.startswith(customer)] == expected[1::2]


def test_an_unknown_customer_has_an_empty_last_page(server: ServerThread) -> None:
    with server.client() as client:
        page = client.get(f"/customers/{new_id('C')}/orders").json()
        assert page == {"orders": [], "next_cursor": None}
