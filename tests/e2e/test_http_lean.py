"""The lean path (orders.http.lean) answers the plain GET /orders/{id} and POST /orders exactly
as FastAPI's full path answers the same requests in the forms it leaves to FastAPI."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread

PEN = {"name": "Pen", "price": "1.25", "quantity": 2}
SKIPPED_HEADERS = {"date", "consistency-token", "location"}


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in SKIPPED_HEADERS}


def test_plain_requests_answer_as_the_full_path_does(server: ServerThread) -> None:
    customer = new_id("C")
    with server.client() as client:
        lean = client.post(
            "/orders", json={"order_id": new_id("ORD"), "customer_id": customer, "items": [PEN]}
        )
        # a query string (ignored by the route) sends the same command through FastAPI
        full = client.post(
            "/orders?via=fastapi",
            json={"order_id": new_id("ORD"), "customer_id": customer, "items": [PEN]},
        )
        assert lean.status_code == full.status_code == 201
        assert _headers(lean) == _headers(full)
        assert lean.json().keys() == full.json().keys()
        assert lean.headers["Location"] == f"/orders/{lean.json()['order_id']}"
        assert lean.headers["Consistency-Token"] == lean.json()["consistency_token"]

        order_id = lean.json()["order_id"]
        token = {"Consistency-Token": lean.headers["Consistency-Token"]}
        assert client.get(f"/orders/{order_id}", headers=token).status_code == 200
        plain = client.get(f"/orders/{order_id}")
        through_fastapi = client.get(f"/orders/{order_id}", params={"via": "fastapi"})
        assert plain.status_code == through_fastapi.status_code == 200
        assert plain.content == through_fastapi.content
        assert _headers(plain) == _headers(through_fastapi)
        assert plain.json()["total"] == "2.50"

        missing = client.get("/orders/ORD-missing")
        missing_full = client.get("/orders/ORD-missing", params={"via": "fastapi"})
        assert missing.status_code == missing_full.status_code == 404
        assert missing.content == missing_full.content


def test_what_the_lean_path_refuses_gets_fastapis_answer(server: ServerThread) -> None:
    with server.client() as client:
        for body in (
            {"customer_id": "C", "items": [{**PEN, "price": "1.001"}]},  # too precise
            {"customer_id": "C", "items": [], "extra": 1},  # unknown field
            {"customer_id": "", "items": []},
        ):
            lean = client.post("/orders", json=body)
            full = client.post("/orders", params={"via": "fastapi"}, json=body)
            assert lean.status_code == full.status_code == 422
            assert lean.json()["errors"] == full.json()["errors"]
        not_json = client.post("/orders", content=b"{", headers={"Content-Type": "text/plain"})
        assert not_json.status_code == 415
        broken = client.post("/orders", content=b"{", headers={"Content-Type": "application/json"})
        assert broken.status_code == 422
        rival = client.post(
            "/orders", json={"order_id": "ORD-x\u0007", "customer_id": "C", "items": []}
        )
        assert rival.status_code == 422
        assert client.get("/orders/ORD-%07").status_code == 422
