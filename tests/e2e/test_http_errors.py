"""Every error class, through real HTTP: RFC 9457 problems, the right status, nothing written."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

import orders.app
from cqrskit import (
    AppendResult,
    Backend,
    ConcurrencyError,
    IdempotencyRecord,
    IdempotentResult,
    NewEvent,
    RecordedEvent,
    StoreUnavailable,
)
from cqrskit.memory import InMemoryEventStore, InMemoryReadStore
from orders.app import Settings
from tests.e2e.conftest import new_id
from tests.e2e.server import ServerThread
from tests.support.waiting import until_sync

PEN = {"name": "Pen", "price": "1.50", "quantity": 1}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"/problems/{slug}"
    assert problem["title"]
    assert problem["detail"]
    assert problem["instance"] == response.request.url.path
    assert "Traceback" not in response.text
    return problem


def event_count(client: httpx.Client, order_id: str) -> int:
    """How many events the order has: 0 only when the service says the order does not exist."""
    response = client.get(f"/orders/{order_id}/events")
    if response.status_code == 404:
        assert response.json()["type"] == "/problems/order-not-found", response.text
        return 0
    assert response.status_code == 200, response.text
    return len(response.json()["events"])


def requests_handled(client: httpx.Client, method: str, route: str) -> int:
    """How many requests to ``route`` the service has finished handling (its metrics count a
    request once the handler is done with it, whatever became of the client)."""
    prefix = f'orders_http_request_duration_seconds_count{{method="{method}",route="{route}",'
    lines = client.get("/metrics").text.splitlines()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in lines if line.startswith(prefix))


@pytest.fixture
def order_id(server: ServerThread) -> str:
    order_id = new_id("ORD")
    with server.client() as client:
        response = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C-1", "items": [PEN]}
        )
        assert response.status_code == 201, response.text
    return order_id


INVALID_ITEMS = {
    "missing name": {"price": "1.00", "quantity": 1},
    "missing price": {"name": "Pen", "quantity": 1},
    "missing quantity": {"name": "Pen", "price": "1.00"},
    "negative price": {"name": "Pen", "price": "-1.00", "quantity": 1},
    "negative price number": {"name": "Pen", "price": -1, "quantity": 1},
    "zero quantity": {"name": "Pen", "price": "1.00", "quantity": 0},
    "negative quantity": {"name": "Pen", "price": "1.00", "quantity": -2},
    "fractional quantity": {"name": "Pen", "price": "1.00", "quantity": 1.5},
    "quantity 1e-7": {"name": "Pen", "price": "1.00", "quantity": 1e-7},
    "bool quantity": {"name": "Pen", "price": "1.00", "quantity": True},
    "string quantity": {"name": "Pen", "price": "1.00", "quantity": "1"},
    "huge quantity": {"name": "Pen", "price": "1.00", "quantity": 10**12},
    "price 0.001": {"name": "Pen", "price": 0.001, "quantity": 1},
    "price 1e-7": {"name": "Pen", "price": 1e-7, "quantity": 1},
    "price string 9.999": {"name": "Pen", "price": "9.999", "quantity": 1},
    "price string 1e2": {"name": "Pen", "price": "1e2", "quantity": 1},
    "price NaN": {"name": "Pen", "price": "NaN", "quantity": 1},
    "price bool": {"name": "Pen", "price": True, "quantity": 1},
    "price list": {"name": "Pen", "price": [1], "quantity": 1},
    "price null": {"name": "Pen", "price": None, "quantity": 1},
    "price too high": {"name": "Pen", "price": "99999999.00", "quantity": 1},
    "blank name": {"name": "   ", "price": "1.00", "quantity": 1},
    "name with NUL": {"name": "P\u0000en", "price": "1.00", "quantity": 1},
    "name too long": {"name": "x" * 201, "price": "1.00", "quantity": 1},
    "name not a string": {"name": 7, "price": "1.00", "quantity": 1},
    "unknown field": {"name": "Pen", "price": "1.00", "quantity": 1, "qty": 2},
}


@pytest.mark.parametrize("body", INVALID_ITEMS.values(), ids=INVALID_ITEMS.keys())
def test_invalid_items_are_422_and_append_nothing(
    server: ServerThread, order_id: str, body: dict[str, Any]
) -> None:
    with server.client() as client:
        problem = assert_problem(
            client.post(f"/orders/{order_id}/items", json=body), 422, "validation-error"
        )
        assert problem["errors"]
        assert all("loc" in e and "msg" in e for e in problem["errors"])
        created = client.post(
            "/orders", json={"order_id": new_id("ORD"), "customer_id": "C", "items": [body]}
        )
        assert_problem(created, 422, "validation-error")
        assert event_count(client, order_id) == 1


def test_numbers_are_taken_exactly_never_rounded(server: ServerThread, order_id: str) -> None:
    raw = '{"name": "Pen", "price": 999.000000000000000001, "quantity": 1}'
    with server.client(headers={"content-type": "application/json"}) as client:
        assert_problem(
            client.post(f"/orders/{order_id}/items", content=raw), 422, "validation-error"
        )
        for price in ("999.000", "12.5", "7", "0", "1E+1"):
            raw = f'{{"name": "Pen", "price": {price}, "quantity": 1.0}}'
            response = client.post(f"/orders/{order_id}/items", content=raw)
            assert response.status_code == 200, (price, response.text)
        order = client.get(
            f"/orders/{order_id}",
            headers={"Consistency-Token": response.json()["consistency_token"]},
        ).json()
        assert [i["price"] for i in order["items"]] == [
            "1.50",
            "999.00",
            "12.50",
            "7.00",
            "0.00",
            "10.00",
        ]


INVALID_ORDERS = {
    "missing customer": {"items": []},
    "missing items": {"customer_id": "C"},
    "customer not a string": {"customer_id": 12, "items": []},
    "items not a list": {"customer_id": "C", "items": {"name": "Pen"}},
    "order id with a slash": {"order_id": "a/b", "customer_id": "C", "items": []},
    "empty order id": {"order_id": "", "customer_id": "C", "items": []},
    "too many items": {"customer_id": "C", "items": [PEN] * 101},
    "a list": [],
    "a string": "order",
}


@pytest.mark.parametrize("body", INVALID_ORDERS.values(), ids=INVALID_ORDERS.keys())
def test_invalid_orders_are_422(server: ServerThread, body: Any) -> None:
    with server.client() as client:
        assert_problem(client.post("/orders", json=body), 422, "validation-error")


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b'{"customer_id": "C", "items": []', b"\xff\xfe", b'{"a": "\\ud800"}'],
)
def test_malformed_json_is_422(server: ServerThread, raw: bytes) -> None:
    with server.client(headers={"content-type": "application/json"}) as client:
        assert_problem(client.post("/orders", content=raw), 422, "validation-error")


def test_oversize_bodies_are_413(server: ServerThread, order_id: str) -> None:
    big = {"customer_id": "C", "items": [{"name": "x" * 200, "price": "1.00", "quantity": 1}] * 400}
    with server.client() as client:
        assert_problem(client.post("/orders", json=big), 413, "body-too-large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"customer_id": "C", "items": ['
            for _ in range(2000):
                yield b'{"name": "Pen", "price": "1.00", "quantity": 1},'
            yield b"]}"

        response = client.post(
            "/orders", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_problem(response, 413, "body-too-large")
        assert event_count(client, order_id) == 1


def test_unknown_orders_are_404(server: ServerThread) -> None:
    missing = new_id("ORD")
    with server.client() as client:
        for response in (
            client.get(f"/orders/{missing}"),
            client.get(f"/orders/{missing}/events"),
            client.post(f"/orders/{missing}/items", json=PEN),
            client.post(f"/orders/{missing}/submit"),
        ):
            assert assert_problem(response, 404, "order-not-found")["order_id"] == missing
        assert event_count(client, missing) == 0
        assert_problem(client.get("/no/such/route"), 404, "http-error")


def test_business_rules_are_409_and_append_nothing(server: ServerThread, order_id: str) -> None:
    with server.client() as client:
        existing = client.post(
            "/orders", json={"order_id": order_id, "customer_id": "C-2", "items": []}
        )
        assert_problem(existing, 409, "order-already-exists")

        empty = new_id("ORD")
        created = client.post("/orders", json={"order_id": empty, "customer_id": "C", "items": []})
        assert created.status_code == 201
        assert_problem(client.post(f"/orders/{empty}/submit"), 409, "cannot-submit-empty-order")

        assert client.post(f"/orders/{order_id}/submit").status_code == 200
        assert_problem(client.post(f"/orders/{order_id}/submit"), 409, "order-already-submitted")
        assert_problem(
            client.post(f"/orders/{order_id}/items", json=PEN),
            409,
            "cannot-modify-submitted-order",
        )
        assert event_count(client, order_id) == 2
        assert event_count(client, empty) == 1


def test_bad_query_parameters_and_tokens_are_422(server: ServerThread) -> None:
    with server.client() as client:
        for params in (
            {"status": "shipped"},
            {"status": "draft", "limit": 0},
            {"status": "draft", "limit": 501},
            {"status": "draft", "limit": "ten"},
            {"status": "draft", "cursor": "not-a-cursor"},
            {"status": "draft", "cursor": "abc$"},
        ):
            assert_problem(client.get("/orders", params=params), 422, *_slug_for(params))
        for token in ("abc", "-1", "1.5", "", "1" * 31):
            response = client.get("/stats/dashboard", headers={"Consistency-Token": token})
            assert_problem(response, 422, "validation-error")
        assert_problem(
            client.post("/orders", json={}, headers={"Idempotency-Key": "with space"}),
            422,
            "validation-error",
        )


def _slug_for(params: dict[str, Any]) -> tuple[str]:
    # A well-formed cursor that this service did not hand out is refused by the query itself.
    return ("invalid-query",) if params.get("cursor") == "not-a-cursor" else ("validation-error",)


def test_unsupported_methods_are_405_with_allow(server: ServerThread) -> None:
    with server.client() as client:
        response = client.delete("/orders")
        assert_problem(response, 405, "http-error")
        assert "POST" in response.headers["Allow"]


def test_a_read_waiting_for_a_token_times_out_with_504(tmp_path: Any) -> None:
    # Projections not running (as with `serve --no-projections` and no worker).
    running = ServerThread(
        Settings(db_url="memory://", consistency_timeout=0.3), run_projections=False
    ).start()
    try:
        with running.client() as client:
            created = client.post("/orders", json={"customer_id": "C", "items": [PEN]})
            token = created.json()["consistency_token"]
            response = client.get(
                f"/orders/{created.json()['order_id']}", headers={"Consistency-Token": token}
            )
            problem = assert_problem(response, 504, "consistency-timeout")
            assert token in problem["detail"]
            assert response.headers["Retry-After"] == "1"
            ready = client.get("/readyz").json()
            assert ready["projections_mode"] == "external"
    finally:
        running.stop()


# -- failures of the store, through a real server over a store that fails on demand ------------


class FlakyEventStore:
    """The in-memory event store, made to fail on demand."""

    def __init__(self) -> None:
        self.inner = InMemoryEventStore()
        self.failure: Exception | None = None

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        self._check()
        return await self.inner.append(stream_id, events, expected_version, idempotency=idempotency)

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        if isinstance(self.failure, StoreUnavailable):
            self._check()
        return await self.inner.read_stream(stream_id, from_version, limit)

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        if isinstance(self.failure, StoreUnavailable):
            self._check()
        return await self.inner.read_all(after, limit)

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        return self.inner.subscribe_all(after, batch_size)

    async def stream_version(self, stream_id: str) -> int:
        return await self.inner.stream_version(stream_id)

    async def head_position(self) -> int:
        if isinstance(self.failure, StoreUnavailable):
            self._check()
        return await self.inner.head_position()

    async def written_position(self) -> int:
        if isinstance(self.failure, StoreUnavailable):
            self._check()
        return await self.inner.written_position()

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        return await self.inner.find_idempotent_result(key)

    async def store_id(self) -> str:
        return await self.inner.store_id()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServerThread, FlakyEventStore]]:
    store = FlakyEventStore()

    async def open_flaky_backend(url: str) -> Backend:
        return Backend(url, store, InMemoryReadStore())  # type: ignore[arg-type]

    # The real composition root, over a store that fails when told to.
    monkeypatch.setattr(orders.app, "open_backend", open_flaky_backend)
    running = ServerThread(Settings(db_url="memory://flaky")).start()
    yield running, store
    running.stop()


def test_a_conflict_that_outlives_the_retries_is_409_with_retry_after(
    flaky: tuple[ServerThread, FlakyEventStore],
) -> None:
    running, store = flaky
    with running.client() as client:
        order_id = client.post("/orders", json={"customer_id": "C", "items": []}).json()["order_id"]
        store.failure = ConcurrencyError(f"order-{order_id}", 1, 2)
        response = client.post(f"/orders/{order_id}/items", json=PEN)
        assert_problem(response, 409, "concurrency-conflict")
        assert response.headers["Retry-After"] == "1"
        metrics = client.get("/metrics").text
        assert "cqrskit_command_retries_total 10.0" in metrics  # max_retries
        assert 'command="AddItems",outcome="concurrency-conflict"' in metrics
        store.failure = None
        assert client.post(f"/orders/{order_id}/items", json=PEN).status_code == 200


def test_an_unavailable_store_is_503_and_not_ready(
    flaky: tuple[ServerThread, FlakyEventStore],
) -> None:
    running, store = flaky
    with running.client() as client:
        store.failure = StoreUnavailable("connection refused")
        response = client.post("/orders", json={"customer_id": "C", "items": [PEN]})
        assert_problem(response, 503, "store-unavailable")
        assert response.headers["Retry-After"] == "2"
        assert "connection refused" not in response.text  # no internals
        assert_problem(client.get("/orders/ORD-1/events"), 503, "store-unavailable")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["store"] == "unreachable"
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        store.failure = None
        assert client.get("/readyz").status_code == 200


def test_a_client_that_hangs_up_mid_body_writes_nothing(
    server: ServerThread, order_id: str
) -> None:
    route = "/orders/{order_id}/items"
    with server.client() as client:
        before = requests_handled(client, "POST", route)
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(
            f"POST /orders/{order_id}/items HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            '{"name": "Pen", '.encode()
        )
    with server.client() as client:
        # the service has seen the hang-up and is done with the request: only now count
        until_sync(
            lambda: requests_handled(client, "POST", route) == before + 1,
            what="the server finishing the abandoned request",
        )
        assert event_count(client, order_id) == 1
