"""A transaction left open elsewhere in the PostgreSQL cluster (a stuck client, a long report)
holds back what readers can see (docs/postgres-ordering.md): appends are acknowledged after the
visibility timeout all the same. A consistency token of such an append is the service's own,
so a read with it waits (504, "retry later", once the consistency timeout is over) and is
served when the transaction ends: it is never refused as beyond the end of the log."""

from __future__ import annotations

from pathlib import Path

import psycopg

from orders.app import Settings
from tests.e2e.server import ServerThread
from tests.faults.load import PEN
from tests.support.waiting import until_sync


def test_a_token_held_back_by_a_transaction_elsewhere_is_waited_for_never_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    running = ServerThread(Settings(db_url=postgres_url, consistency_timeout=0.5)).start()
    try:
        with running.client() as http, psycopg.connect(postgres_url) as stuck:
            order_id = http.post("/orders", json={"customer_id": "C", "items": []}).json()[
                "order_id"
            ]
            stuck.execute("SELECT pg_current_xact_id()")  # an open transaction with an id

            added = http.post(f"/orders/{order_id}/items", json=PEN)
            assert added.status_code == 200, added.text
            token = {"Consistency-Token": added.headers["Consistency-Token"]}
            held = http.get(f"/orders/{order_id}", headers=token)
            assert held.status_code == 504, held.text
            assert held.json()["type"].endswith("consistency-timeout")
            assert held.headers["Retry-After"] == "1"

            stuck.rollback()
            until_sync(
                lambda: http.get(f"/orders/{order_id}", headers=token).status_code == 200,
                what="the read served once the transaction ended",
            )
            assert http.get(f"/orders/{order_id}", headers=token).json()["item_count"] == 1
    finally:
        running.stop()
