"""Supervised projections through HTTP: a failing projection makes /readyz 503 with its reason,
/metrics counts its restarts, and once the failure ends it catches up with no restart of the
service."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

import orders.app
from cqrskit import Backend, StoreUnavailable
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from orders.app import Settings, build_app
from orders.http.api import create_api
from tests.e2e.server import ServerThread
from tests.support.flaky import FlakyReadStore
from tests.support.waiting import until_sync

PEN = {"name": "Pen", "price": "1.50", "quantity": 1}


def restarts(metrics: str, projection: str) -> float:
    found = re.search(
        rf'cqrskit_projection_restarts_total{{projection="{projection}"}} (\S+)', metrics
    )
    assert found, metrics
    return float(found[1])


@pytest.fixture
def flaky_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, FlakyReadStore]]:
    read = FlakyReadStore(InMemoryReadStore())

    async def open_flaky_backend(url: str) -> Backend:
        return Backend(url, InMemoryEventStore(), read)  # type: ignore[arg-type]

    monkeypatch.setattr(orders.app, "open_backend", open_flaky_backend)
    running = ServerThread(Settings(db_url="memory://flaky")).start()
    yield running, read
    running.stop()


def test_a_projection_that_cannot_write_makes_readyz_503_until_it_recovers_by_itself(
    flaky_read: tuple[ServerThread, FlakyReadStore],
) -> None:
    running, read = flaky_read
    with running.client() as client:
        assert client.get("/readyz").status_code == 200
        read.only, read.failure = {"apply"}, StoreUnavailable("disk I/O error")

        created = client.post("/orders", json={"customer_id": "C", "items": [PEN]})
        assert created.status_code == 201  # the write side does not need the read model

        def backing_off() -> bool:
            return client.get("/readyz").status_code == 503

        until_sync(backing_off)
        ready = client.get("/readyz").json()
        assert ready["store"] == "reachable"
        assert {p["state"] for p in ready["projections"]} == {"backing_off"}
        assert all("disk I/O error" in p["last_error"] for p in ready["projections"])
        assert any("projection orders is backing_off" in r for r in ready["reasons"])
        assert client.get("/healthz").status_code == 200
        until_sync(lambda: restarts(client.get("/metrics").text, "orders") >= 1)
        metrics = client.get("/metrics").text
        assert 'cqrskit_projection_state{projection="orders",state="backing_off"} 1.0' in metrics
        assert 'cqrskit_projection_running{projection="orders"} 0.0' in metrics

        read.failure = None
        token = {"Consistency-Token": created.headers["Consistency-Token"]}
        order = client.get(f"/orders/{created.json()['order_id']}", headers=token)
        assert order.status_code == 200, order.text
        until_sync(lambda: client.get("/readyz").status_code == 200)
        ready = client.get("/readyz").json()
        assert ready["reasons"] == []
        assert {p["state"] for p in ready["projections"]} == {"running"}
        assert all(p["restarts"] >= 1 and p["lag_events"] == 0 for p in ready["projections"])


async def test_a_service_that_should_run_its_projections_but_did_not_start_them_is_not_ready() -> (
    None
):
    orders_app = await build_app(Settings(db_url="memory://"))
    api = create_api(orders_app, projections_in_process=True)  # and nobody starts them
    try:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert {p["state"] for p in ready.json()["projections"]} == {"external"}
        assert any("not started" in reason for reason in ready.json()["reasons"])
    finally:
        await orders_app.close()
