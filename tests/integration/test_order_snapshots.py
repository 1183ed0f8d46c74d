"""Order snapshots on every backend: through the framework's API and through the ``orders``
command (each CLI call is a new process, so it loads the order from the store)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from cqrskit import Backend, CommandHandler, EventCodec
from cqrskit.backends import open_backend
from cqrskit.snapshots import SnapshotPolicy
from orders.app import register_commands
from orders.domain import (
    EVENT_TYPES,
    STATE_VERSION,
    UPCASTERS,
    AddItems,
    CreateOrder,
    LineItem,
    OrderState,
    order_decider,
    stream_id,
)
from tests.support.postgres import fresh_url

ORDERS = str(Path(sys.executable).with_name("orders"))
PEN = LineItem(name="Pen", price=Decimal("1.25"), quantity=2)
codec = EventCodec(EVENT_TYPES, upcasters=UPCASTERS)


def handler_on(backend: Backend, every: int | None) -> CommandHandler:
    handler = CommandHandler(backend.events, codec, snapshots=backend.snapshots, cache_size=0)
    register_commands(handler)
    if every is not None:
        policy = SnapshotPolicy(OrderState, every=every, state_version=STATE_VERSION)
        handler.enable_snapshots(order_decider, policy)
    return handler


async def test_given_a_long_order_when_a_new_handler_loads_it_then_from_its_snapshot(
    backend: Backend,
) -> None:
    writer = handler_on(backend, every=10)
    await writer.handle(CreateOrder(order_id="O-1", customer_id="C"))
    for _ in range(24):
        await writer.handle(AddItems(order_id="O-1", items=(PEN,)))

    from_snapshot = await handler_on(backend, every=10).load(order_decider, stream_id("O-1"))
    from_events = await handler_on(backend, every=None).load(order_decider, stream_id("O-1"))

    expected = OrderState(status="draft", item_count=24, total=Decimal("60.00"))
    assert from_snapshot == from_events == (25, expected)
    assert writer.snapshots_taken == 2
    assert backend.snapshots is not None
    stored = await backend.snapshots.load(stream_id("O-1"), "OrderState", STATE_VERSION)
    assert stored is not None
    assert stored.stream_version == 20


def orders_cli(*args: str, db: str, cwd: Path, every: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "CQRSKIT_SNAPSHOT_EVERY": str(every)}
    env["CQRSKIT_DB"] = db
    return subprocess.run(
        [ORDERS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return fresh_url(request)
    return f"sqlite:///{tmp_path / 'orders.db'}"


async def test_the_cli_snapshots_long_orders_and_its_commands_load_from_them(
    db: str, tmp_path: Path
) -> None:
    created = orders_cli("create-order", "O-1", "--customer", "C", db=db, cwd=tmp_path, every=3)
    assert created.returncode == 0, created.stderr
    for _ in range(4):
        added = orders_cli("add-item", "O-1", "--item", "Pen:1.25:2", db=db, cwd=tmp_path, every=3)
        assert added.returncode == 0, added.stderr
    backend = await open_backend(db)
    try:
        assert backend.snapshots is not None
        stored = await backend.snapshots.load(stream_id("O-1"), "OrderState", STATE_VERSION)
        assert stored is not None
        assert stored.stream_version == 3  # created + 2 items, then 2 more after it
    finally:
        await backend.close()

    submitted = orders_cli("submit", "O-1", "--json", db=db, cwd=tmp_path, every=3)
    refused = orders_cli("add-item", "O-1", "--item", "Ink:1.00:1", db=db, cwd=tmp_path, every=3)

    assert submitted.returncode == 0, submitted.stderr
    assert refused.returncode == 1, refused.stdout
    assert "submitted and can no longer be changed" in refused.stdout
