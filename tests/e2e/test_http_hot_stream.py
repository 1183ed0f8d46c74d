"""A hot order: many clients adding items to one order at once are all served, one server or
two, and every acknowledged item is in the order."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.e2e.conftest import StartServer, new_id
from tests.e2e.server import ServerThread

CLIENTS = 32


async def add_items_at_once(servers: list[ServerThread], order_id: str) -> list[int]:
    """``CLIENTS`` concurrent AddItems on ``order_id``, spread over ``servers``; their statuses
    and the largest consistency token acknowledged."""
    clients = [server.async_client() for server in servers]
    try:
        start = asyncio.Event()

        async def add(n: int) -> tuple[int, int]:
            await start.wait()
            item = {"name": f"Pen {n}", "price": "1.25", "quantity": n % 3 + 1}
            response = await clients[n % len(clients)].post(f"/orders/{order_id}/items", json=item)
            return response.status_code, int(response.headers.get("Consistency-Token", 0))

        tasks = [asyncio.create_task(add(n)) for n in range(CLIENTS)]
        start.set()
        outcomes = await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()
    return [status for status, _ in outcomes] + [max(token for _, token in outcomes)]


async def check_order(server: ServerThread, order_id: str, statuses: list[int], token: int) -> None:
    acknowledged = [n for n, status in enumerate(statuses) if status == 200]
    async with server.async_client() as client:
        order = (
            await client.get(f"/orders/{order_id}", headers={"Consistency-Token": str(token)})
        ).json()
    assert sorted(item["name"] for item in order["items"]) == sorted(
        f"Pen {n}" for n in acknowledged
    )
    assert Decimal(order["total"]) == sum(Decimal("1.25") * (n % 3 + 1) for n in acknowledged)


async def test_one_server_serves_every_client_of_a_hot_order_without_a_conflict(
    start_server: StartServer,
) -> None:
    server = start_server()
    order_id = new_id("HOT")
    async with server.async_client() as client:
        created = await client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C", "items": []}
        )
        assert created.status_code == 201

    *statuses, token = await add_items_at_once([server], order_id)

    assert statuses == [200] * CLIENTS
    await check_order(server, order_id, statuses, token)


@pytest.mark.parametrize("backend_name", ["postgres"], indirect=True)
async def test_two_servers_on_one_hot_order_answer_at_most_a_tenth_with_409(
    start_server: StartServer,
) -> None:
    first = start_server()
    second = ServerThread(first.settings).start()
    try:
        order_id = new_id("HOT")
        async with first.async_client() as client:
            created = await client.post(
                "/orders", json={"order_id": order_id, "customer_id": "C", "items": []}
            )
            assert created.status_code == 201

        *statuses, token = await add_items_at_once([first, second], order_id)

        assert set(statuses) <= {200, 409}
        assert statuses.count(409) <= CLIENTS // 10
        await check_order(first, order_id, statuses, token)
    finally:
        second.stop()
