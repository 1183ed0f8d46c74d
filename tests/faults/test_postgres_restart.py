"""PostgreSQL stopped and started again under a live ``orders serve`` process (the suite's own
throwaway server, never the shared one): while it is down every command is answered 503 with
``Retry-After`` (never a hang, never a 500) and ``/readyz`` is 503; once it is back the same
process serves commands and its projections resume by themselves; nothing acknowledged is lost
and the read model equals a full replay."""

from __future__ import annotations

import re
import signal
import socket
import uuid
from pathlib import Path

from tests.faults.load import (
    Load,
    assert_read_model_is_a_replay,
    assert_store_unavailable,
    client,
)
from tests.support.services import Process, read_response, received_by_server, refused, serve
from tests.support.throwaway_postgres import ThrowawayPostgres
from tests.support.waiting import until_sync


def restarts(metrics: str) -> float:
    found = re.findall(r'cqrskit_projection_restarts_total\{projection="[^"]+"\} (\S+)', metrics)
    assert found, metrics
    return sum(float(count) for count in found)


async def test_a_service_rides_out_a_database_restart_with_503s_and_resumes_by_itself(
    postgres: ThrowawayPostgres, postgres_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, postgres_url)
    service = processes[0]
    load = Load(url, customer=f"C-{uuid.uuid4().hex[:8]}").start()
    try:
        load.wait_for_more(20, what="20 orders acknowledged")
        with client(url) as http:
            assert http.get("/readyz").status_code == 200

            postgres.stop()
            load.wait_for_refusals(8, what="503s while the database is down")
            assert_store_unavailable(http.post("/orders", json={"customer_id": "C", "items": []}))
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["store"] == "unreachable"
            assert http.get("/healthz").status_code == 200

            postgres.start()
            load.wait_for_more(20, what="commands served again after the restart")
            until_sync(lambda: http.get("/readyz").status_code == 200, what="ready again")
            assert restarts(http.get("/metrics").text) >= 1
    finally:
        load.stop()
    load.assert_only_refused_cleanly()
    assert service.popen.poll() is None  # the same process throughout
    load.assert_nothing_lost()
    assert service.stop() == 0
    logged = " ".join(str(line.get("msg")) for line in service.lines())
    assert "stopped at checkpoint" in logged
    assert "restarting in" in logged
    await assert_read_model_is_a_replay(postgres_url)


def test_sigterm_during_an_outage_answers_the_commands_in_flight_503_never_500(
    postgres: ThrowawayPostgres, postgres_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    url = serve(processes, tmp_path, postgres_url)
    service = processes[0]
    port = int(url.rsplit(":", 1)[1])
    body = b'{"customer_id": "C", "items": [{"name": "Pen", "price": "2.00", "quantity": 1}]}'
    postgres.stop()
    # Requests held in flight: headers and part of the body sent, the rest after SIGTERM.
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    for sock in held:
        sock.sendall(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
        )
    until_sync(
        lambda: all(received_by_server(port, sock) for sock in held),
        what="the held requests in the server's hands",
    )
    service.popen.send_signal(signal.SIGTERM)
    until_sync(lambda: refused(port), what="the server refusing new connections")
    for sock in held:
        sock.sendall(body[10:])
    for sock in held:
        with sock:
            status, problem = read_response(sock)
        assert status == 503, problem
        assert str(problem["type"]).endswith("store-unavailable")
    assert service.popen.wait(60) == 0
    logged = service.log.read_text()
    assert "Traceback" not in logged
