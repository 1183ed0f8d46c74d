"""The live routes through real HTTP: the event log over SSE (resuming, heartbeats, slow
clients) and subscription queries; and the list of every order."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from orders.app import Settings
from orders.http.sse import StreamSettings
from tests.e2e.conftest import fresh_db_url, new_id
from tests.e2e.server import ServerThread
from tests.support.sse import ServerSentEvent, read_events

DEADLINE = 20.0
PEN = {"name": "Pen", "price": "1.25", "quantity": 1}
# Heartbeats often, so that a reader waiting for a condition wakes up to check its deadline.
FAST = StreamSettings(heartbeat=0.2)


@pytest.fixture(scope="module")
def streaming(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    url = fresh_db_url(backend_name, tmp_path_factory, request)
    running = ServerThread(Settings(db_url=url), stream_settings=FAST).start()
    yield running
    running.stop()


@pytest.fixture
def start_streaming(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Callable[[StreamSettings], ServerThread]:
    """A server of its own on a fresh database, with the given stream settings."""

    def start(stream_settings: StreamSettings) -> ServerThread:
        url = fresh_db_url(backend_name, tmp_path_factory, request)
        running = ServerThread(Settings(db_url=url), stream_settings=stream_settings)
        request.addfinalizer(running.start().stop)
        return running

    return start


def create(client: httpx.Client, order_id: str, customer: str = "C-live") -> httpx.Response:
    response = client.post(
        "/orders", json={"order_id": order_id, "customer_id": customer, "items": [PEN]}
    )
    assert response.status_code == 201, response.text
    return response


def first(
    events: Iterator[ServerSentEvent],
    matches: Callable[[ServerSentEvent], bool],
    deadline: float = DEADLINE,
) -> ServerSentEvent:
    """The first event that ``matches``, within ``deadline`` seconds."""
    until = time.monotonic() + deadline
    for event in events:
        if matches(event):
            return event
        if time.monotonic() > until:
            break
    raise AssertionError("no matching event before the deadline")


def order_events_of(events: Iterator[ServerSentEvent], order_id: str, count: int) -> list[Any]:
    found: list[Any] = []
    while len(found) < count:
        found.append(first(events, lambda e: e.data["stream_id"] == f"order-{order_id}").data)
    return found


def test_the_event_stream_resumes_right_after_the_position_given(streaming: ServerThread) -> None:
    order_id = new_id("ORD")
    with streaming.client() as client:
        created = create(client, order_id)
        for _ in range(3):
            client.post(f"/orders/{order_id}/items", json=PEN)
        stored = client.get(f"/orders/{order_id}/events").json()["events"]
        start = int(created.headers["Consistency-Token"]) - 1
        with client.stream("GET", "/events/stream", params={"after": start}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response)
            got = [next(events) for _ in stored]
        assert [e.id for e in got] == [e["position"] for e in stored]
        assert [e.event for e in got] == [e["type"] for e in stored]
        assert [e.data for e in got] == stored  # the stored event, as the events route has it

        # A reconnecting browser sends Last-Event-ID; it wins over ?after=.
        resume = {"Last-Event-ID": stored[1]["position"]}
        with client.stream(
            "GET", "/events/stream", params={"after": 0}, headers=resume
        ) as response:
            events = read_events(response)
            assert [next(events).id for _ in stored[2:]] == [e["position"] for e in stored[2:]]


def test_a_stream_from_now_shows_new_events_and_keeps_quiet_ones_alive(
    streaming: ServerThread,
) -> None:
    order_id = new_id("ORD")
    with streaming.client() as client, client.stream("GET", "/events/stream") as response:
        events = read_events(response, with_comments=True)
        beat = first(events, lambda e: not e.data_lines)
        assert beat.comments == ["keep-alive"]
        with streaming.client() as other:
            token = create(other, order_id).headers["Consistency-Token"]
        seen = first(events, lambda e: bool(e.data_lines))
        assert (seen.id, seen.event) == (token, "OrderCreated")
        assert seen.data["data"]["order_id"] == order_id


def test_bad_resume_positions_are_refused(streaming: ServerThread) -> None:
    with streaming.client() as client:
        assert client.get("/events/stream", params={"after": -1}).status_code == 422
        assert client.get("/events/stream", headers={"Last-Event-ID": "x"}).status_code == 422
        refused = client.get("/live/orders", params={"cursor": "bm9wZQ"})
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"


def test_subscription_queries_answer_now_then_after_each_change(streaming: ServerThread) -> None:
    order_id = new_id("ORD")
    with (
        streaming.client() as client,
        client.stream("GET", "/live/stats/dashboard") as stats_response,
        client.stream("GET", f"/live/orders/{order_id}") as order_response,
        client.stream("GET", "/live/orders", params={"status": "submitted"}) as list_response,
    ):
        stats, order, listed = (
            read_events(r) for r in (stats_response, order_response, list_response)
        )
        before = next(stats).data
        assert next(order).data is None  # not created yet
        assert order_id not in [o["order_id"] for o in next(listed).data["orders"]]

        with streaming.client() as other:
            token = int(create(other, order_id).headers["Consistency-Token"])
            draft = first(order, lambda e: e.data is not None)
            assert draft.data["status"] == "draft"
            assert int(draft.id or 0) >= token  # sent after the projection applied it
            grown = first(stats, lambda e: e.data["total_orders"] > before["total_orders"])
            assert int(grown.id or 0) >= token
            assert grown.data["draft_orders"] >= 1

            submitted = other.post(f"/orders/{order_id}/submit")
            token = int(submitted.headers["Consistency-Token"])
        done = first(order, lambda e: e.data["status"] == "submitted")
        assert int(done.id or 0) >= token
        assert done.data == client.get(f"/orders/{order_id}").json()  # what a query returns
        first(listed, lambda e: order_id in [o["order_id"] for o in e.data["orders"]])


def test_get_orders_without_a_status_lists_every_order(streaming: ServerThread) -> None:
    customer = new_id("C")
    ids = [f"{customer}-{n}" for n in range(7)]
    with streaming.client() as client:
        for n, order_id in enumerate(ids):
            written = create(client, order_id, customer)
            if n % 2:
                written = client.post(f"/orders/{order_id}/submit")
        token = {"Consistency-Token": written.headers["Consistency-Token"]}
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = client.get("/orders", params=params, headers=token).json()
            seen.extend(o["order_id"] for o in page["orders"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [i for i in seen if i.startswith(customer)] == ids
        newest: list[str] = []
        cursor = None
        while True:
            params = {"customer_id": customer, "order": "newest", "limit": 3}
            page = client.get(
                "/orders", params={**params, **({"cursor": cursor} if cursor else {})}
            )
            newest.extend(o["order_id"] for o in page.json()["orders"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert newest == ids[::-1]
        mine = client.get("/orders", params={"customer_id": customer, "status": "submitted"})
        assert mine.status_code == 200
        assert [o["order_id"] for o in mine.json()["orders"]] == ids[1::2]


def test_a_client_that_stops_reading_is_disconnected_and_slows_nobody(
    start_streaming: Callable[[StreamSettings], ServerThread],
) -> None:
    running = start_streaming(StreamSettings(heartbeat=0.2, buffer=20))
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", running.port))
    reader.sendall(b"GET /events/stream HTTP/1.1\r\nHost: test\r\n\r\n")
    head = reader.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head
    # Big events fill the socket's buffers quickly; the stuck reader must not hold anyone up.
    # Commands go on until the service reports the client cut off (bounded: the kernel's
    # socket buffers hold a few megabytes at most).
    items = [{"name": "x" * 200, "price": "1.00", "quantity": 1} for _ in range(100)]
    with running.client() as client:
        for _ in range(2000):
            created = client.post(
                "/orders", json={"order_id": new_id("BIG"), "customer_id": "C", "items": items}
            )
            assert created.status_code == 201
            if cut_off_count(client) >= 1:
                break
        else:
            raise AssertionError("the stuck client was never cut off")
    # Now read: what the socket held, then the end of the connection (heartbeats would go on
    # forever on a connection the server kept).
    received = read_until_closed(reader)
    assert not received.endswith(b"0\r\n\r\n")  # cut off, not a finished response


def cut_off_count(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("orders_sse_clients_cut_off_total "):
            return float(line.split()[1])
    raise AssertionError("no orders_sse_clients_cut_off_total in /metrics")


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(DEADLINE)
    until = time.monotonic() + DEADLINE
    received = bytearray()
    while time.monotonic() < until:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError("the server kept the connection of a client that stopped reading")


def test_stopping_the_server_ends_open_streams_cleanly(
    start_streaming: Callable[[StreamSettings], ServerThread],
) -> None:
    running = start_streaming(FAST)
    ended = threading.Event()
    with running.client() as client, client.stream("GET", "/events/stream") as response:
        events = read_events(response, with_comments=True)
        next(events)  # the stream is open
        stopper = threading.Thread(target=lambda: (running.stop(), ended.set()))
        stopper.start()
        for _ in events:  # ends without a protocol error when the server ends it
            pass
        stopper.join(DEADLINE)
    assert ended.is_set()


def test_the_projections_report_live_and_say_when_they_applied_a_command(
    streaming: ServerThread,
) -> None:
    with streaming.client() as client:
        before = time.time()
        token = create(client, new_id("ORD")).headers["Consistency-Token"]
        applied = client.get(f"/projections/applied/{token}")
        assert applied.status_code == 200, applied.text
        body = applied.json()
        assert body["position"] == token
        assert {p["name"] for p in body["projections"]} == {"orders", "order_stats"}
        for projection in body["projections"]:
            moment = datetime.fromisoformat(projection["applied_at"]).timestamp()
            assert before <= moment <= time.time()
        assert client.get("/projections/applied/0").status_code == 422

        with client.stream("GET", "/live/projections") as response:
            report = next(read_events(response)).data
        assert int(report["head"]) >= int(token)
        assert {p["name"]: p["state"] for p in report["projections"]} == {
            "orders": "running",
            "order_stats": "running",
        }
        assert all(int(p["position"]) >= int(token) for p in report["projections"])
