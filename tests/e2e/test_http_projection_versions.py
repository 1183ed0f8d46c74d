"""A deploy that brings a new version of the ``orders`` projection, under a steady query load.

Two services share one database, as during a rolling deploy: ``blue`` runs the release that
declares version 1 only, ``green`` the release that declares version 2 beside it. While green
builds version 2, both keep answering from version 1; once it has caught up, both switch to it,
and version 1's tables are dropped. Clients query both services all along: every answer must
be 200 and whole (every order, the same dashboard), and the new version serves at the end.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import httpx

from orders.projections import orders_projection, stats_projection
from tests.e2e.conftest import StartServer
from tests.e2e.server import ServerThread
from tests.support.waiting import until_sync

NEW_RELEASE = (orders_projection, orders_projection.versioned(2), stats_projection)
COUNT = 60


def _orders_versions(client: httpx.Client) -> dict[int, tuple[str, str]]:
    """Version → (role, checkpoint) of the ``orders`` projection, as the service reports it."""
    ready = client.get("/readyz").json()
    return {
        p["version"]: (p["role"], p["position"])
        for p in ready["projections"]
        if p["name"] == "orders"
    }


def _new_order(client: httpx.Client, n: int) -> str:
    created = client.post(
        "/orders",
        json={
            "order_id": f"ORD-{n:03d}",
            "customer_id": f"C-{n % 3}",
            "items": [{"name": "Pen", "price": "1.50", "quantity": n % 4 + 1}],
        },
    )
    assert created.status_code == 201, created.text
    token: str = created.headers["Consistency-Token"]
    return token


def test_a_new_version_takes_over_under_query_load_with_no_error_and_no_partial_answer(
    start_server: StartServer,
) -> None:
    blue = start_server(projection_batch_size=10)
    with blue.client() as client:
        for n in range(COUNT):
            token = _new_order(client, n)
        consistent = {"Consistency-Token": token}
        orders = client.get("/orders", params={"limit": 500}, headers=consistent).json()
        dashboard = client.get("/stats/dashboard", headers=consistent).json()
    assert len(orders["orders"]) == COUNT

    answered: dict[str, int] = {}
    wrong: list[str] = []
    stop = threading.Event()

    def load(server: ServerThread) -> None:
        with server.client() as queries:
            while not stop.is_set():
                for path, params, expected in (
                    ("/orders", {"limit": 500}, orders),
                    ("/stats/dashboard", {}, dashboard),
                ):
                    answer = queries.get(path, params=params)
                    body: Any = answer.json() if answer.status_code == 200 else answer.text
                    if answer.status_code != 200 or body != expected:
                        wrong.append(f"{server.url}{path}: {answer.status_code} {body}"[:300])
                answered[server.url] = answered.get(server.url, 0) + 1

    loaders = [threading.Thread(target=load, args=(blue,), daemon=True)]
    loaders[0].start()
    until_sync(lambda: answered.get(blue.url, 0) > 0, what="queries answered before the deploy")
    settings = dataclasses.replace(blue.settings, retired_grace=0.0)  # drop once safe
    green = ServerThread(settings, projections=NEW_RELEASE).start()
    try:
        loaders.append(threading.Thread(target=load, args=(green,), daemon=True))
        loaders[1].start()
        with blue.client() as blue_client, green.client() as green_client:
            for client in (blue_client, green_client):
                until_sync(
                    lambda client=client: _orders_versions(client).get(2, ("",))[0] == "serving",
                    what="version 2 serving in both services",
                )
            # Dropped: version 1 is retired and its checkpoint forgotten with its tables.
            until_sync(
                lambda: _orders_versions(blue_client)[1] == ("retired", "0"),
                what="version 1's tables dropped",
            )
            switched = dict(answered)
            until_sync(
                lambda: all(answered[url] > switched[url] for url in (blue.url, green.url)),
                what="queries answered by both services after the drop",
            )
            stop.set()
            for loader in loaders:
                loader.join(60)
            assert wrong == []

            # Writes after the switch are read back, with their token, from either service.
            token = _new_order(blue_client, COUNT)
            for client in (blue_client, green_client):
                found = client.get(f"/orders/ORD-{COUNT:03d}", headers={"Consistency-Token": token})
                assert found.status_code == 200, found.text
                ready = client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert _orders_versions(client)[2][0] == "serving"
    finally:
        stop.set()
        green.stop()


def _orders_states(client: httpx.Client) -> dict[int, str]:
    """Version → state of the ``orders`` projection in this service."""
    ready = client.get("/readyz").json()
    return {p["version"]: p["state"] for p in ready["projections"] if p["name"] == "orders"}


def _warnings(client: httpx.Client) -> list[str]:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    found: list[str] = ready.json()["warnings"]
    return found


def test_a_deploy_rolled_back_is_named_and_a_newer_version_with_the_old_handlers_rolls_it_back(
    start_server: StartServer,
) -> None:
    # given release 1 (version 1), then release 2 (version 2) deployed beside it and serving
    blue = start_server(projection_batch_size=10)
    green = ServerThread(blue.settings, projections=NEW_RELEASE).start()
    try:
        with blue.client() as client:
            _new_order(client, 0)
        with green.client() as client:
            until_sync(
                lambda: _orders_versions(client).get(2, ("",))[0] == "serving",
                what="version 2 serving",
            )
        with blue.client() as client:
            until_sync(
                lambda: _orders_states(client).get(1) == "retired",
                what="release 1's version 1 stopped",
            )
    finally:
        # when release 2 is rolled back: its processes are gone, release 1's remain
        green.stop()
    with blue.client() as client:
        warnings = _warnings(client)
        assert any("version 2 serves, newer than this release's 1" in w for w in warnings)
        stale = _new_order(client, 1)
        # no process keeps version 2 now: the new order is not in the read model it serves
        assert client.get("/orders/ORD-001").status_code == 404

    # then the old handlers deployed as version 3 build, take over and serve every order
    rollback = (orders_projection.versioned(3), stats_projection)
    fixed = ServerThread(blue.settings, projections=rollback).start()
    try:
        with fixed.client() as client:
            until_sync(
                lambda: _orders_versions(client).get(3, ("",))[0] == "serving",
                what="version 3 serving",
            )
            found = client.get("/orders/ORD-001", headers={"Consistency-Token": stale})
            assert found.status_code == 200, found.text
            assert _warnings(client) == []
            assert _orders_versions(client)[2][0] == "retired"
    finally:
        fixed.stop()
