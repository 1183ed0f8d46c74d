"""Idempotent retries over HTTP: the same key returns the first response and appends nothing."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread

PEN = {"name": "Pen", "price": "1.50", "quantity": 2}


def events_of(client: httpx.Client, order_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/orders/{order_id}/events").json()["events"]]


def test_a_retried_create_returns_the_first_response_and_appends_nothing(
    server: ServerThread,
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"customer_id": new_id("C"), "items": [PEN]}  # no order_id: derived from the key
    with server.client() as client:
        first = client.post("/orders", json=body, headers=key)
        assert first.status_code == 201, first.text
        assert "Idempotent-Replayed" not in first.headers
        for _ in range(3):
            again = client.post("/orders", json=body, headers=key)
            assert again.status_code == 201
            assert again.json() == first.json()
            assert again.headers["Consistency-Token"] == first.headers["Consistency-Token"]
            assert again.headers["Location"] == first.headers["Location"]
            assert again.headers["Idempotent-Replayed"] == "true"
        assert events_of(client, first.json()["order_id"]) == ["OrderCreated"]


def test_retried_item_and_submit_commands_are_applied_once(server: ServerThread) -> None:
    order_id = new_id("ORD")
    with server.client() as client:
        created = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C", "items": []}
        )
        assert created.status_code == 201
        add_key = {"Idempotency-Key": new_id("add")}
        submit_key = {"Idempotency-Key": new_id("submit")}
        added = [client.post(f"/orders/{order_id}/items", json=PEN, headers=add_key) for _ in "ab"]
        submitted = [client.post(f"/orders/{order_id}/submit", headers=submit_key) for _ in "ab"]
        for first, second in (added, submitted):
            assert first.status_code == second.status_code == 200
            assert first.json() == second.json()
        # Without the key, a second submit is a rule violation, not a replay.
        assert client.post(f"/orders/{order_id}/submit").status_code == 409
        assert events_of(client, order_id) == ["OrderCreated", "ItemsAdded", "OrderSubmitted"]
        order = client.get(
            f"/orders/{order_id}",
            headers={"Consistency-Token": submitted[0].json()["consistency_token"]},
        ).json()
        assert order["total"] == "3.00"


def test_the_same_key_with_another_body_is_refused(server: ServerThread) -> None:
    key = {"Idempotency-Key": new_id("key")}
    customer = new_id("C")
    with server.client() as client:
        first = client.post("/orders", json={"customer_id": customer, "items": [PEN]}, headers=key)
        assert first.status_code == 201
        order_id = first.json()["order_id"]
        other = client.post(
            "/orders", json={"customer_id": customer, "items": [PEN, PEN]}, headers=key
        )
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        # ... and on another route too
        elsewhere = client.post(f"/orders/{order_id}/submit", headers=key)
        assert elsewhere.json()["type"] == "/problems/idempotency-key-reused"
        assert events_of(client, order_id) == ["OrderCreated"]


def test_a_failed_command_does_not_burn_its_key(server: ServerThread) -> None:
    order_id = new_id("ORD")
    key = {"Idempotency-Key": new_id("key")}
    with server.client() as client:
        assert client.post(f"/orders/{order_id}/items", json=PEN, headers=key).status_code == 404
        created = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C", "items": []}
        )
        assert created.status_code == 201
        added = client.post(f"/orders/{order_id}/items", json=PEN, headers=key)
        assert added.status_code == 200, added.text
        assert "Idempotent-Replayed" not in added.headers


async def test_concurrent_retries_with_one_key_create_one_order(server: ServerThread) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"customer_id": new_id("C"), "items": [PEN]}
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(client.post("/orders", json=body, headers=key) for _ in range(16))
        )
        assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
        assert len({r.text for r in responses}) == 1
        order_id = responses[0].json()["order_id"]
        events = (await client.get(f"/orders/{order_id}/events")).json()["events"]
        assert [e["type"] for e in events] == ["OrderCreated"]

        add_key = {"Idempotency-Key": str(uuid.uuid4())}
        adds = await asyncio.gather(
            *(
                client.post(f"/orders/{order_id}/items", json=PEN, headers=add_key)
                for _ in range(16)
            )
        )
        assert {r.status_code for r in adds} == {200}, [r.text for r in adds]
        assert len({r.json()["version"] for r in adds}) == 1
        events = (await client.get(f"/orders/{order_id}/events")).json()["events"]
        assert [e["type"] for e in events] == ["OrderCreated", "ItemsAdded"]
