"""HTTP edges a hostile client finds: methods, media types, invisible names, repeated headers,
tokens beyond the log, and a read model that is not the event store's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orders.app import Settings
from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread
from tests.e2e.test_cli import run
from tests.e2e.test_http_errors import assert_problem
from tests.support.waiting import until_sync

PEN = {"name": "Pen", "price": "1.50", "quantity": 1}
INVISIBLE = ["\u200b", "\u200e\u200f", "\u2028", " \u202e ", "\ufeff\u2060", "\u3164", "\U000e0020"]


def events_of(client: httpx.Client, order_id: str) -> int:
    return len(client.get(f"/orders/{order_id}/events").json()["events"])


def new_order(client: httpx.Client) -> str:
    order_id = new_id("ORD")
    created = client.post("/orders", json={"order_id": order_id, "customer_id": "C", "items": []})
    assert created.status_code == 201, created.text
    return order_id


def test_405_lists_every_method_of_the_path(server: ServerThread) -> None:
    with server.client() as client:
        for path, allowed in (
            ("/orders", "GET, HEAD, POST"),
            ("/orders/X/items", "POST"),
            ("/orders/X", "GET, HEAD"),
            ("/healthz", "GET, HEAD"),
        ):
            response = client.delete(path)
            assert_problem(response, 405, "http-error")
            assert response.headers["Allow"] == allowed


def test_head_answers_every_get_route_without_a_body(server: ServerThread) -> None:
    with server.client() as client:
        order_id = new_order(client)
        for path in ("/healthz", f"/orders/{order_id}/events", "/stats/dashboard", "/metrics"):
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code == 200
            assert head.content == b""
            assert head.headers["content-type"] == got.headers["content-type"]
        assert client.head("/orders/NOPE-404").status_code == 404


def test_a_body_that_is_not_declared_json_is_415_and_writes_nothing(server: ServerThread) -> None:
    with server.client() as client:
        order_id = new_order(client)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/json"):
            response = client.post(
                f"/orders/{order_id}/items",
                content=b'{"name": "Pen", "price": "1.50", "quantity": 1}',
                headers={"Content-Type": content_type},
            )
            assert_problem(response, 415, "unsupported-media-type")
        declared = client.post(
            f"/orders/{order_id}/items",
            content=b'{"name": "Pen", "price": "1.50", "quantity": 1}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert declared.status_code == 200, declared.text
        assert events_of(client, order_id) == 2


@pytest.mark.parametrize("name", INVISIBLE)
def test_a_name_of_invisible_characters_only_is_refused_like_a_blank_one(
    server: ServerThread, name: str
) -> None:
    with server.client() as client:
        order_id = new_order(client)
        response = client.post(f"/orders/{order_id}/items", json={**PEN, "name": name})
        assert response.status_code == 422, response.text
        created = client.post(
            "/orders", json={"customer_id": "C", "items": [{**PEN, "name": name}]}
        )
        assert created.status_code == 422, created.text
        visible = client.post(f"/orders/{order_id}/items", json={**PEN, "name": f"{name}Pen"})
        assert visible.status_code == 200, visible.text
        assert events_of(client, order_id) == 2


def test_two_idempotency_keys_are_refused_not_reduced_to_one(server: ServerThread) -> None:
    with server.client() as client:
        order_id = new_order(client)
        response = client.post(
            f"/orders/{order_id}/items",
            json=PEN,
            headers=[("Idempotency-Key", "first"), ("Idempotency-Key", "second")],
        )
        problem = assert_problem(response, 422, "validation-error")
        assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
        assert events_of(client, order_id) == 1


def test_a_token_beyond_the_head_of_the_log_is_422_not_a_wait(server: ServerThread) -> None:
    with server.client() as client:
        order_id = new_order(client)
        head = int(client.get("/readyz").json()["projections"][0]["head"])
        for token in (str(head * 2 + 10**9), "9" * 30):
            response = client.get(f"/orders/{order_id}", headers={"Consistency-Token": token})
            problem = assert_problem(response, 422, "invalid-consistency-token")
            assert "beyond the end of the event log" in problem["detail"]
        for malformed in ("-1", "1.5", "abc", "9" * 31, ""):
            response = client.get(f"/orders/{order_id}", headers={"Consistency-Token": malformed})
            assert_problem(response, 422, "validation-error")


def test_a_read_model_of_another_store_is_refused_until_a_rebuild_then_served(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    assert run("create-order", "OLD-1", "-c", "C", cwd=tmp_path, db=db).returncode == 0
    assert run("orders", "--status", "draft", cwd=tmp_path, db=db).returncode == 0
    for stale in tmp_path.glob("orders.db*"):
        stale.unlink()  # the event store goes; its read model stays
    running = ServerThread(Settings(db_url=db)).start()
    try:
        with running.client() as client:
            created = client.post("/orders", json={"customer_id": "C", "items": [PEN]})
            assert created.status_code == 201  # commands need no read model
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert any("orders projections rebuild" in r for r in ready.json()["reasons"])
            query = client.get("/orders", params={"status": "draft"})
            problem = assert_problem(query, 503, "read-model-refused")
            assert "was built from another event store" in problem["detail"]

            rebuilt = run("projections", "rebuild", cwd=tmp_path, db=db)
            assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr

            until_sync(lambda: client.get("/readyz").status_code == 200)
            token = {"Consistency-Token": created.headers["Consistency-Token"]}
            drafts = client.get("/orders", params={"status": "draft"}, headers=token).json()
            assert [o["order_id"] for o in drafts["orders"]] == [created.json()["order_id"]]
    finally:
        running.stop()
