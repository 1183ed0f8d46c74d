"""Dead letters through HTTP: an event this release cannot read parks its order in ``orders``
and halts ``order_stats``; /readyz stays ready and says so, /metrics counts them, the admin
routes list, retry (after a fix, from the fixed release) and discard them. On SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from orders.app import Settings
from orders.domain import UPCASTERS
from tests.e2e.conftest import StartServer
from tests.e2e.server import ServerThread
from tests.e2e.test_cli_dead_letters import FIX, NEWER_ITEMS_ADDED, append_newer_event
from tests.support.waiting import until_sync

PEN = {"name": "Pen", "price": "1.50", "quantity": 2}
INK = {"name": "Ink", "price": "3.00", "quantity": 1}
CAP = {"name": "Cap", "price": "5.00", "quantity": 1}


def metric(client: httpx.Client, name: str, projection: str, extra: str = "") -> float:
    text = client.get("/metrics").text
    found = re.search(rf'{name}{{projection="{projection}"{extra}}} (\S+)', text)
    assert found, text
    return float(found[1])


def projection(client: httpx.Client, name: str) -> dict[str, Any]:
    ready = client.get("/readyz").json()
    return next(p for p in ready["projections"] if p["name"] == name)


def given_a_bad_event(client: httpx.Client, url: str) -> tuple[int, str]:
    """Orders A and B, an event on A no release reads (from a newer release, rolled back),
    then an item added to B; the bad event's position and B's consistency token."""
    for order_id, item in (("A", PEN), ("B", INK)):
        created = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C", "items": [item]}
        )
        assert created.status_code == 201, created.text
    bad = append_newer_event(url, "A")
    added = client.post("/orders/B/items", json=CAP)
    assert added.status_code == 200, added.text
    return bad, added.headers["Consistency-Token"]


def test_a_bad_event_is_parked_or_halts_and_readyz_metrics_and_the_admin_routes_say_so(
    start_server: StartServer,
) -> None:
    running = start_server()
    with running.client() as client:
        bad, token = given_a_bad_event(client, running.settings.db_url)
        order = client.get("/orders/B", headers={"Consistency-Token": token})
        until_sync(lambda: projection(client, "order_stats")["state"] == "halted", what="the halt")
        ready = client.get("/readyz")
        stats = projection(client, "order_stats")
        listed = client.get("/projections/orders/dead-letters").json()["dead_letters"]
        one_order = client.get("/projections/orders/dead-letters", params={"order_id": "B"})
        unknown = client.get("/projections/nope/dead-letters")
        restarts = metric(client, "cqrskit_projection_restarts_total", "order_stats")
        retried = client.post("/projections/order_stats/dead-letters/retry")

        # the orders projection went on with order B; the stats halted at the bad event
        assert order.status_code == 200, order.text
        assert [item["name"] for item in order.json()["items"]] == ["Ink", "Cap"]
        assert ready.status_code == 200  # a halt needs a person, not a load balancer
        assert ready.json()["ready"] is True
        assert any(
            f"projection order_stats is halted at position {bad}" in warning
            for warning in ready.json()["warnings"]
        )
        assert projection(client, "orders")["dead_letters"] == 1
        assert stats["halted"]["position"] == str(bad)
        assert stats["halted"]["status"] == "halted"
        assert "Traceback (most recent call last)" in stats["halted"]["traceback"]
        assert [(x["position"], x["stream_id"], x["status"]) for x in listed] == [
            (str(bad), "order-A", "parked")
        ]
        assert listed[0]["data"] == NEWER_ITEMS_ADDED
        assert "written by a newer release" in listed[0]["error"]
        assert one_order.json() == {"dead_letters": []}
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert unknown.json()["type"] == "/problems/projection-not-found"
        assert restarts == 0  # halted, not restarted over and over
        assert metric(client, "cqrskit_projection_dead_letters", "orders") == 1
        assert metric(client, "cqrskit_projection_halted", "order_stats") == 1
        assert metric(client, "cqrskit_projection_state", "order_stats", ',state="halted"') == 1
        assert retried.status_code == 200
        assert retried.json()["applied"] == 0
        assert [letter["position"] for letter in retried.json()["failed"]] == [str(bad)]

    # the fixed release, deployed beside it, retries them; the running service resumes
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("orders.app.UPCASTERS", (*UPCASTERS, FIX))
        fixed = ServerThread(Settings(db_url=running.settings.db_url), run_projections=False)
        fixed.start()
    try:
        with fixed.client() as client:
            applied = [
                client.post(f"/projections/{name}/dead-letters/retry").json()
                for name in ("orders", "order_stats")
            ]
    finally:
        fixed.stop()
    with running.client() as client:
        until_sync(lambda: projection(client, "order_stats")["state"] == "running", what="resuming")
        until_sync(lambda: projection(client, "order_stats")["lag_events"] == 0, what="catching up")
        dashboard = client.get("/stats/dashboard").json()
        after = client.get("/readyz").json()

    assert [(outcome["applied"], outcome["failed"]) for outcome in applied] == [(1, []), (1, [])]
    assert dashboard["total_revenue"] == "13.00"  # 3.00 + 2.00 (the gift) + 3.00 + 5.00
    assert after["warnings"] == []
    assert [(p["dead_letters"], p["halted"]) for p in after["projections"]] == [
        (0, None),
        (0, None),
    ]


def test_discarding_an_orders_dead_letters_over_http(start_server: StartServer) -> None:
    running = start_server()
    with running.client() as client:
        given_a_bad_event(client, running.settings.db_url)
        until_sync(lambda: projection(client, "orders")["dead_letters"] == 1, what="the parking")
        until_sync(lambda: projection(client, "order_stats")["state"] == "halted", what="the halt")

        discarded = [
            client.post(f"/projections/{name}/dead-letters/discard", params={"order_id": "A"})
            for name in ("orders", "order_stats")
        ]
        until_sync(lambda: projection(client, "order_stats")["lag_events"] == 0, what="resuming")
        dashboard = client.get("/stats/dashboard").json()

    assert [response.json() for response in discarded] == [
        {"projection": "orders", "discarded": 1},
        {"projection": "order_stats", "discarded": 1},
    ]
    assert dashboard["total_revenue"] == "11.00"  # without the discarded event


def test_a_command_on_an_order_whose_history_this_release_cannot_read_names_the_event(
    start_server: StartServer,
) -> None:
    running = start_server()
    with running.client() as client:
        given_a_bad_event(client, running.settings.db_url)

        refused = client.post("/orders/A/items", json=CAP)

    assert refused.status_code == 500
    problem = refused.json()
    assert problem["type"] == "/problems/unreadable-event"
    assert problem["title"] == "Stored event cannot be read"
    assert problem["detail"].startswith("event ItemsAdded v2 (stream 'order-A' version 2)")
