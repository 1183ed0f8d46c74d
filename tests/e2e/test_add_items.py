"""Several items in one request (``AddItems`` → one ``ItemsAdded``), over HTTP and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread
from tests.e2e.test_cli import run

PEN = {"name": "Pen", "price": "1.50", "quantity": 2}
INK = {"name": "Ink", "price": "7.25", "quantity": 1}


def _draft(client: httpx.Client) -> str:
    order_id = new_id("ORD")
    created = client.post("/orders", json={"order_id": order_id, "customer_id": "C", "items": []})
    assert created.status_code == 201, created.text
    return order_id


def test_given_a_draft_when_several_items_are_posted_then_one_event_adds_them_all(
    server: ServerThread,
) -> None:
    with server.client() as client:
        order_id = _draft(client)

        added = client.post(f"/orders/{order_id}/items", json={"items": [PEN, INK]})

        assert added.status_code == 200, added.text
        assert added.json()["version"] == 2
        token = {"Consistency-Token": added.headers["Consistency-Token"]}
        order = client.get(f"/orders/{order_id}", headers=token).json()
        assert (order["items"], order["item_count"], order["total"]) == ([PEN, INK], 2, "10.25")
        (event,) = client.get(f"/orders/{order_id}/events", params={"from_version": 2}).json()[
            "events"
        ]
        assert (event["type"], event["data"]["items"]) == ("ItemsAdded", [PEN, INK])
        assert event["current"] == {
            "type": "ItemsAdded",
            "schema_version": 1,
            "data": event["data"],
        }
        single = client.post(f"/orders/{order_id}/items", json=PEN)  # one item, as before
        assert (single.status_code, single.json()["version"]) == (200, 3), single.text


def test_when_the_items_are_empty_mixed_or_invalid_then_422_and_nothing_is_added(
    server: ServerThread,
) -> None:
    with server.client() as client:
        order_id = _draft(client)
        for body in (
            {"items": []},
            {"items": [PEN], **PEN},
            {"items": [PEN, {**INK, "price": "0.001"}]},
            {"items": [PEN] * 101},
        ):
            refused = client.post(f"/orders/{order_id}/items", json=body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["type"].endswith("/validation-error")
        events = client.get(f"/orders/{order_id}/events").json()["events"]
        assert [e["type"] for e in events] == ["OrderCreated"]


def test_the_cli_adds_several_items_with_repeated_item_options(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    assert run("create-order", "ORD-1", "--customer", "C", cwd=tmp_path, db=db).returncode == 0

    added = run(
        "add-item", "ORD-1", "--item", "Pen:1.50:2", "--item", "Ink:7.25:1", "--json",
        cwd=tmp_path, db=db,
    )  # fmt: skip

    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["version"] == 2
    assert [e["type"] for e in result["events"]] == ["ItemsAdded"]
    order = json.loads(run("order", "ORD-1", "--json", cwd=tmp_path, db=db).stdout)
    assert (order["item_count"], order["total"]) == (2, "10.25")


def test_the_cli_refuses_both_item_forms_at_once_or_neither(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    assert run("create-order", "ORD-1", "--customer", "C", cwd=tmp_path, db=db).returncode == 0
    for args in (
        (),
        ("--name", "Pen", "--price", "1.50", "--item", "Ink:7.25:1"),
        ("--name", "Pen"),
        ("--price", "1.50"),
    ):
        refused = run("add-item", "ORD-1", *args, cwd=tmp_path, db=db)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
    log = json.loads(run("events", "ORD-1", "--json", cwd=tmp_path, db=db).stdout)
    assert [e["type"] for e in log] == ["OrderCreated"]
