"""``orders projections status`` and ``drop-retired`` while a deploy brings a new version of the
``orders`` projection (blue/green): real ``orders`` processes on SQLite and PostgreSQL.

The deploy is played by the test: an Orders app that declares version 2 of ``orders`` beside
version 1, as a release that changes the projection would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from cqrskit import VersionRole
from cqrskit.backends import open_backend
from orders.app import OrdersApp, Settings, assemble_app
from orders.projections import orders_projection, stats_projection
from tests.e2e.test_cli import db, run  # noqa: F401  (db is a fixture)
from tests.support.waiting import until, until_sync

NEW_RELEASE = (orders_projection, orders_projection.versioned(2), stats_projection)


async def _new_release(url: str) -> OrdersApp:
    backend = await open_backend(url)
    return await assemble_app(Settings(db_url=url), backend, projections=NEW_RELEASE)


async def _deploy_declared(url: str) -> None:
    app = await _new_release(url)  # declares version 2; nothing built yet
    await app.close()


async def _deploy_until_switched(url: str) -> None:
    app = await _new_release(url)
    app.start_projections()
    try:

        async def serving_v2() -> bool:
            return await app.supervisor.versions.serving("orders") == 2

        await until(serving_v2, what="version 2 of orders serving")
    finally:
        await app.close()


def _status(tmp_path: Path, url: str) -> dict[tuple[str, int], dict[str, Any]]:
    result = run("projections", "status", "--json", cwd=tmp_path, db=url)
    assert result.returncode == 0, result.stdout + result.stderr
    return {(row["projection"], row["version"]): row for row in json.loads(result.stdout)}


def _order_ids(tmp_path: Path, url: str) -> list[str]:
    page = json.loads(run("orders", "--json", cwd=tmp_path, db=url).stdout)
    return [order["order_id"] for order in page["orders"]]


def test_status_shows_both_versions_during_a_build_and_drop_retired_drops_the_old(
    tmp_path: Path,
    db: str,  # noqa: F811
) -> None:
    for n in range(5):
        run("create-order", f"ORD-{n}", "-c", "C", "-i", "Pen:2.00:1", cwd=tmp_path, db=db)
    orders = [f"ORD-{n}" for n in range(5)]
    assert _order_ids(tmp_path, db) == orders  # the CLI's queries bring version 1 up to date
    asyncio.run(_deploy_declared(db))

    during = _status(tmp_path, db)
    assert set(during) == {("orders", 1), ("orders", 2), ("order_stats", 1)}
    serving, building = during[("orders", 1)], during[("orders", 2)]
    assert (serving["role"], serving["position"], serving["lag_events"]) == (
        VersionRole.SERVING,
        serving["head"],
        0,
    )
    assert (building["role"], building["position"], building["lag_events"]) == (
        VersionRole.BUILDING,
        0,
        5,
    )
    shown = run("projections", "status", cwd=tmp_path, db=db).stdout
    assert "building" in shown
    assert "5 events" in shown
    assert _order_ids(tmp_path, db) == orders  # version 1 answers during the build

    asyncio.run(_deploy_until_switched(db))
    after = _status(tmp_path, db)
    assert after[("orders", 2)]["role"] == VersionRole.SERVING
    assert after[("orders", 2)]["lag_events"] == 0
    assert after[("orders", 1)]["role"] == VersionRole.RETIRED
    assert _order_ids(tmp_path, db) == orders  # now from version 2's tables
    # this CLI is release 1's: the version that serves is one it does not keep
    warned = run("projections", "status", cwd=tmp_path, db=db).stdout
    assert "warning: projection orders: version 2 serves, newer than this release's 1" in warned

    def dropped() -> bool:
        result = run("projections", "drop-retired", cwd=tmp_path, db=db)
        assert result.returncode == 0, result.stdout + result.stderr
        return "dropped orders: orders" in result.stdout

    until_sync(dropped, what="version 1 of orders dropped (once the grace minimum passed)")
    gone = _status(tmp_path, db)[("orders", 1)]  # still declared by this release: retired
    assert (gone["role"], gone["position"]) == (VersionRole.RETIRED, 0)
    assert _order_ids(tmp_path, db) == orders
    assert (
        "no retired projection versions"
        in run("projections", "drop-retired", cwd=tmp_path, db=db).stdout
    )
