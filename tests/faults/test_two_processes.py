"""Two processes deciding on one order, on SQLite and on PostgreSQL (the suite's own server):
a refusal one process would reach from its cached state is checked against the stored stream
first (two services; a service and the CLI), and many clients adding items to one order through
two services all land, the few conflicts that outlive the retries answered 409, never lost."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import httpx

from tests.e2e.test_cli import run
from tests.faults.load import PEN, assert_read_model_is_a_replay, client
from tests.support.services import Process, serve

CLIENTS = 32


def new_order(http: httpx.Client) -> str:
    order_id = f"ORD-{uuid.uuid4().hex[:12]}"
    created = http.post("/orders", json={"order_id": order_id, "customer_id": "C", "items": []})
    assert created.status_code == 201, created.text
    return order_id


def test_a_refusal_from_one_services_cache_is_checked_against_the_other_services_write(
    db_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    first, second = serve(processes, tmp_path, db_url), serve(processes, tmp_path, db_url)
    with client(first) as a, client(second) as b:
        order_id = new_order(a)  # a's cache: an order with no items
        assert b.post(f"/orders/{order_id}/items", json=PEN).status_code == 200

        submitted = a.post(f"/orders/{order_id}/submit")
        assert submitted.status_code == 200, submitted.text

        late = b.post(f"/orders/{order_id}/items", json=PEN)  # b's cache: a draft
        assert late.status_code == 409, late.text
        assert late.json()["type"].endswith("cannot-modify-submitted-order")
        events = a.get(f"/orders/{order_id}/events").json()["events"]
        assert [e["type"] for e in events] == ["OrderCreated", "ItemsAdded", "OrderSubmitted"]


def test_a_refusal_from_the_services_cache_is_checked_against_a_write_by_the_cli(
    tmp_path: Path, processes: list[Process]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'orders.db'}"
    url = serve(processes, tmp_path, db_url)
    with client(url) as http:
        order_id = new_order(http)
        added = run(
            "add-item", order_id, "--name", "Pen", "--price", "2.00", cwd=tmp_path, db=db_url
        )
        assert added.returncode == 0, added.stdout + added.stderr

        submitted = http.post(f"/orders/{order_id}/submit")
        assert submitted.status_code == 200, submitted.text


async def test_two_services_adding_items_to_one_order_lose_nothing_and_rarely_conflict(
    db_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    urls = [serve(processes, tmp_path, db_url), serve(processes, tmp_path, db_url)]
    with client(urls[0]) as http:
        order_id = new_order(http)
    clients = [httpx.AsyncClient(base_url=url, timeout=60.0) for url in urls]
    try:
        for each in clients:  # both services have the order cached, as in a live system
            assert (await each.get(f"/orders/{order_id}/events")).status_code == 200
        start = asyncio.Event()

        async def add(n: int) -> int:
            await start.wait()
            item = {"name": f"Pen {n}", "price": "1.25", "quantity": n % 3 + 1}
            response = await clients[n % 2].post(f"/orders/{order_id}/items", json=item)
            return response.status_code

        tasks = [asyncio.create_task(add(n)) for n in range(CLIENTS)]
        start.set()
        statuses = await asyncio.gather(*tasks)
        assert set(statuses) <= {200, 409}, statuses
        assert statuses.count(409) <= CLIENTS // 10, statuses
        acknowledged = [n for n, status in enumerate(statuses) if status == 200]
        last = await clients[0].post(f"/orders/{order_id}/items", json=PEN)
        token = {"Consistency-Token": last.headers["Consistency-Token"]}
        order = (await clients[1].get(f"/orders/{order_id}", headers=token)).json()
    finally:
        for each in clients:
            await each.aclose()
    names = sorted(item["name"] for item in order["items"])
    assert names == sorted([*(f"Pen {n}" for n in acknowledged), "Pen"])
    wanted = sum(Decimal("1.25") * (n % 3 + 1) for n in acknowledged) + Decimal("6.00")
    assert Decimal(order["total"]) == wanted
    for process in processes:
        assert process.stop() == 0
    await assert_read_model_is_a_replay(db_url)
