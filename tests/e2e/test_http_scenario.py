"""The seed's scenario and every query, through real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.e2e.conftest import StartServer, new_id
from tests.e2e.server import ServerThread

LAPTOP = {"name": "Laptop", "price": "999.00", "quantity": 1}
MOUSE = {"name": "Mouse", "price": 49, "quantity": 2}  # a JSON number, exact to the cent
KEYBOARD = {"name": "Keyboard", "price": 79.0, "quantity": 1}
MONITOR = {"name": "Monitor", "price": "399.00", "quantity": 1}


def post(client: httpx.Client, path: str, body: Any = None, status: int = 200) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["Consistency-Token"] == response.json()["consistency_token"]
    result: dict[str, Any] = response.json()
    return result


def get(client: httpx.Client, path: str, token: str | None = None, **params: Any) -> Any:
    headers = {"Consistency-Token": token} if token else {}
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_the_seed_scenario_end_to_end(start_server: StartServer) -> None:
    with start_server().client() as client:
        created = post(
            client,
            "/orders",
            {"order_id": "ORD-001", "customer_id": "CUST-123", "items": [LAPTOP, MOUSE]},
            status=201,
        )
        assert created["order_id"] == "ORD-001"
        assert created["version"] == 1
        added = post(client, "/orders/ORD-001/items", KEYBOARD)
        assert added["version"] == 2
        submitted = post(client, "/orders/ORD-001/submit")
        assert submitted["version"] == 3
        second = post(
            client, "/orders", {"customer_id": "CUST-123", "items": [MONITOR]}, status=201
        )
        assert second["order_id"].startswith("ORD-")
        token = second["consistency_token"]

        order = get(client, "/orders/ORD-001", token)
        assert order["status"] == "submitted"
        assert order["total"] == "1176.00"
        assert order["item_count"] == 3
        assert [(i["name"], i["price"], i["quantity"]) for i in order["items"]] == [
            ("Laptop", "999.00", 1),
            ("Mouse", "49.00", 2),
            ("Keyboard", "79.00", 1),
        ]
        assert order["submitted_at"] is not None

        by_customer = get(client, "/customers/CUST-123/orders", token)
        assert [o["order_id"] for o in by_customer["orders"]] == ["ORD-001", second["order_id"]]
        assert by_customer["next_cursor"] is None
        drafts = get(client, "/orders", token, status="draft")
        assert [o["order_id"] for o in drafts["orders"]] == [second["order_id"]]
        submitted_orders = get(client, "/orders", token, status="submitted")
        assert [o["order_id"] for o in submitted_orders["orders"]] == ["ORD-001"]

        assert get(client, "/stats/dashboard", token) == {
            "total_orders": 2,
            "total_revenue": "1575.00",
            "draft_orders": 1,
            "submitted_orders": 1,
            "average_order_value": "787.50",
        }
        # the day the order was submitted (UTC), not the day the test looks: a run may cross
        # midnight
        day = datetime.fromisoformat(order["submitted_at"]).astimezone(UTC).date().isoformat()
        assert get(client, "/stats/daily", token) == {
            "days": [{"date": day, "count": 1, "revenue": "1176.00"}]
        }

        log = get(client, "/orders/ORD-001/events")
        assert [(e["type"], e["version"]) for e in log["events"]] == [
            ("OrderCreated", 1),
            ("ItemsAdded", 2),
            ("OrderSubmitted", 3),
        ]
        assert log["events"][1]["data"]["items"] == [
            {"name": "Keyboard", "price": "79.00", "quantity": 1}
        ]
        positions = [int(e["position"]) for e in log["events"]]
        assert positions == sorted(positions)
        assert positions[-1] == int(submitted["consistency_token"])
        assert get(client, "/orders/ORD-001/events", from_version=3)["events"][0]["version"] == 3


def test_operations_endpoints(server: ServerThread) -> None:
    with server.client() as client:
        order_id = new_id("ORD")
        created = post(
            client, "/orders", {"order_id": order_id, "customer_id": "C", "items": []}, status=201
        )
        assert created["version"] == 1
        get(client, f"/orders/{order_id}", created["consistency_token"])

        assert get(client, "/healthz") == {"status": "ok"}
        ready = get(client, "/readyz")
        assert ready["ready"] is True
        assert ready["store"] == "reachable"
        assert ready["projections_mode"] == "in-process"
        assert {p["name"] for p in ready["projections"]} == {"orders", "order_stats"}
        for projection in ready["projections"]:
            assert projection["running"] is True
            assert int(projection["position"]) >= int(created["consistency_token"])

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'orders_commands_total{command="CreateOrder",outcome="ok"}' in text
        assert 'orders_command_duration_seconds_count{command="CreateOrder"}' in text
        assert "cqrskit_command_retries_total" in text
        for name in ("position", "lag_events", "lag_seconds", "running"):
            assert f'cqrskit_projection_{name}{{projection="orders"}}' in text
        assert 'route="/orders/{order_id}"' in text

        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        schema = client.get("/openapi.json").json()
        assert {"/orders", "/orders/{order_id}/items", "/stats/daily", "/readyz"} <= set(
            schema["paths"]
        )


def test_a_generated_order_id_is_new_each_time_without_a_key(server: ServerThread) -> None:
    with server.client() as client:
        body = {"customer_id": new_id("C"), "items": [LAPTOP]}
        first = post(client, "/orders", body, status=201)
        second = post(client, "/orders", body, status=201)
        assert first["order_id"] != second["order_id"]
        response = client.post("/orders", json=body)
        assert response.headers["Location"] == f"/orders/{response.json()['order_id']}"
