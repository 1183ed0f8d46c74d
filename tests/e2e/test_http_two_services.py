"""Two services on one database: both serve, both are ready, and every write is read back."""

from __future__ import annotations

from tests.e2e.conftest import StartServer, new_id
from tests.e2e.server import ServerThread


def test_two_services_on_one_database_are_both_ready_and_read_each_others_writes(
    start_server: StartServer,
) -> None:
    first = start_server()
    second = ServerThread(first.settings).start()
    try:
        with first.client() as one, second.client() as other:
            # On PostgreSQL one service's projections hold the lease and the other's stand
            # by; standing by is ready, and reads through either see writes through either.
            for client in (one, other):
                assert client.get("/readyz").status_code == 200
            order_id = new_id("ORD")
            created = other.post(
                "/orders",
                json={
                    "order_id": order_id,
                    "customer_id": "C-1",
                    "items": [{"name": "Pen", "price": "1.50", "quantity": 2}],
                },
            )
            assert created.status_code == 201, created.text
            token = {"Consistency-Token": created.headers["Consistency-Token"]}
            for client in (one, other):
                order = client.get(f"/orders/{order_id}", headers=token)
                assert order.status_code == 200, order.text
                assert order.json()["total"] == "3.00"
                assert client.get("/readyz").status_code == 200
    finally:
        second.stop()
