"""The read-store contract: what every :class:`~cqrskit.ReadStore` backend must do.

Run it against a backend by importing it into a test module of a suite that provides an async
``backend`` fixture (a :class:`cqrskit.backends.Backend`)::

    from cqrskit.testing.read_store_contract import *  # noqa: F403

The tests need pytest and pytest-asyncio (``asyncio_mode = "auto"``). Rows carry a random
``tenant`` and projections have random names, so the tests can share a database.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from cqrskit.errors import CheckpointMoved, TableMissing
from cqrskit.readmodel import Column, ColumnType, ReadStore, Row, Table, ViewTransaction
from cqrskit.store import Backend


def _items(name: str = "contract_items") -> Table:
    return Table(
        name,
        columns=(
            Column("tenant", ColumnType.TEXT),
            Column("item_id", ColumnType.TEXT),
            Column("rank", ColumnType.INTEGER),
            Column("label", ColumnType.TEXT, nullable=True),
            Column("details", ColumnType.JSON, nullable=True),
            Column("seen_at", ColumnType.TIMESTAMP),
        ),
        key=("tenant", "item_id"),
        indexes=(("tenant", "rank", "item_id"), ("tenant", "seen_at")),
    )


ITEMS = _items()
TOTALS = Table(
    "contract_totals",
    columns=(Column("tenant", ColumnType.TEXT), Column("total", ColumnType.INTEGER)),
    key=("tenant",),
)
COUNTERS = Table(
    "contract_counters",
    columns=(
        Column("tenant", ColumnType.TEXT),
        Column("day", ColumnType.TEXT),
        Column("orders", ColumnType.INTEGER),
        Column("cents", ColumnType.INTEGER),
    ),
    key=("tenant", "day"),
)
_NOON = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _row(tenant: str, n: int, **changes: Any) -> Row:
    row: Row = {
        "tenant": tenant,
        "item_id": f"item-{n:03d}",
        "rank": n,
        "label": f"label {n}",
        "details": {"n": n, "tags": ["a", "b"]},
        "seen_at": _NOON + timedelta(minutes=n),
    }
    row.update(changes)
    return row


def _names() -> tuple[str, str]:
    return f"tenant-{uuid4()}", f"projection-{uuid4()}"


async def _ready(backend: Backend, *tables: Table) -> ReadStore:
    await backend.read.setup(tables or (ITEMS, TOTALS))
    return backend.read


async def _put_rows(store: ReadStore, projection: str, rows: list[Row], position: int = 1) -> None:
    def write(view: ViewTransaction) -> None:
        for row in rows:
            view.put(ITEMS, row)

    expected = await store.checkpoint(projection)
    await store.apply(projection, expected, position, write)


# --- setup, apply and the checkpoint -----------------------------------------------------------


async def test_setup_is_idempotent_and_keeps_rows(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, 1)])
    await store.setup([ITEMS, TOTALS])
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1)


async def test_a_new_projection_starts_at_checkpoint_zero(backend: Backend) -> None:
    store = await _ready(backend)
    assert await store.checkpoint(f"projection-{uuid4()}") == 0


async def test_apply_writes_rows_and_moves_the_checkpoint(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, _row(tenant, 1))
        view.put(ITEMS, _row(tenant, 2))
        view.put(TOTALS, {"tenant": tenant, "total": 2})

    await store.apply(projection, 0, 17, write)
    assert await store.checkpoint(projection) == 17
    assert await store.get(ITEMS, tenant, "item-002") == _row(tenant, 2)
    assert await store.get(TOTALS, tenant) == {"tenant": tenant, "total": 2}


async def test_a_stale_checkpoint_raises_checkpoint_moved_and_writes_nothing(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, 1)], position=5)

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, _row(tenant, 1, label="changed"))
        view.put(ITEMS, _row(tenant, 2))

    with pytest.raises(CheckpointMoved) as raised:
        await store.apply(projection, 0, 9, write)
    assert (raised.value.projection, raised.value.expected, raised.value.actual) == (
        projection,
        0,
        5,
    )
    assert await store.checkpoint(projection) == 5
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1)
    assert await store.get(ITEMS, tenant, "item-002") is None


async def test_a_checkpoint_expected_where_none_was_stored_raises_checkpoint_moved(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    store = await _ready(backend)

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, _row(tenant, 1))

    with pytest.raises(CheckpointMoved) as raised:
        await store.apply(projection, 5, 9, write)
    assert (raised.value.expected, raised.value.actual) == (5, 0)
    assert await store.checkpoint(projection) == 0
    assert await store.get(ITEMS, tenant, "item-001") is None


async def test_an_error_in_write_rolls_back_every_table_and_the_checkpoint(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, 1)], position=3)

    class Boom(Exception):
        pass

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, _row(tenant, 1, rank=100))
        view.put(ITEMS, _row(tenant, 2))
        view.put(TOTALS, {"tenant": tenant, "total": 1})
        view.delete(ITEMS, tenant, "item-001")
        raise Boom

    with pytest.raises(Boom):
        await store.apply(projection, 3, 8, write)
    assert await store.checkpoint(projection) == 3
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1)
    assert await store.get(ITEMS, tenant, "item-002") is None
    assert await store.get(TOTALS, tenant) is None


async def test_a_batch_sees_its_own_changes(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, n) for n in (1, 2)])
    seen: dict[str, Any] = {}

    def write(view: ViewTransaction) -> None:
        row = view.get(ITEMS, tenant, "item-001")
        assert row is not None
        row["rank"] += 10
        view.put(ITEMS, row)
        seen["updated"] = view.get(ITEMS, tenant, "item-001")
        view.delete(ITEMS, tenant, "item-002")
        seen["deleted"] = view.get(ITEMS, tenant, "item-002")
        view.put(ITEMS, _row(tenant, 3))
        seen["inserted"] = view.get(ITEMS, tenant, "item-003")
        seen["missing"] = view.get(ITEMS, tenant, "item-404")

    await store.apply(projection, 1, 2, write)
    assert seen["updated"]["rank"] == 11
    assert seen["deleted"] is None
    assert seen["missing"] is None
    assert seen["inserted"] == _row(tenant, 3)
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1, rank=11)
    assert await store.get(ITEMS, tenant, "item-002") is None
    assert await store.get(ITEMS, tenant, "item-003") == _row(tenant, 3)


async def test_increments_add_to_a_row_creating_it_with_zeros(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend, COUNTERS)
    seen: dict[str, Any] = {}

    def first(view: ViewTransaction) -> None:
        view.increment(COUNTERS, {"tenant": tenant, "day": "d1", "orders": 1})
        view.increment(COUNTERS, {"tenant": tenant, "day": "d1", "orders": 2, "cents": 150})
        seen["within"] = view.get(COUNTERS, tenant, "d1")

    def second(view: ViewTransaction) -> None:
        view.increment(COUNTERS, {"tenant": tenant, "day": "d1", "cents": -50})
        view.increment(COUNTERS, {"tenant": tenant, "day": "d2", "orders": 1})

    await store.apply(projection, 0, 1, first)
    await store.apply(projection, 1, 2, second)
    assert seen["within"] == {"tenant": tenant, "day": "d1", "orders": 3, "cents": 150}
    assert await store.get(COUNTERS, tenant, "d1") == {
        "tenant": tenant, "day": "d1", "orders": 3, "cents": 100,
    }  # fmt: skip
    assert await store.get(COUNTERS, tenant, "d2") == {
        "tenant": tenant, "day": "d2", "orders": 1, "cents": 0,
    }  # fmt: skip


async def test_increments_of_batches_applied_side_by_side_all_count(backend: Backend) -> None:
    tenant, _ = _names()
    store = await _ready(backend, COUNTERS)
    projections = [f"partition-{uuid4()}" for _ in range(8)]

    async def count(projection: str) -> None:
        for position in range(1, 6):

            def write(view: ViewTransaction) -> None:
                for day in ("d2", "d1"):  # not in key order: the store orders the locks
                    view.increment(COUNTERS, {"tenant": tenant, "day": day, "orders": 1})

            await store.apply(projection, position - 1, position, write)

    await asyncio.gather(*(count(projection) for projection in projections))
    for day in ("d1", "d2"):
        row = await store.get(COUNTERS, tenant, day)
        assert row is not None
        assert row["orders"] == 8 * 5


async def test_a_refused_increment_writes_nothing(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend, ITEMS, COUNTERS)
    key = {"tenant": tenant, "day": "d"}
    attempts = [
        ("not an integer", lambda view: view.increment(ITEMS, _row(tenant, 1))),
        ("no column", lambda view: view.increment(COUNTERS, {**key, "x": 1})),
        ("must be an int", lambda view: view.increment(COUNTERS, {**key, "orders": 1.5})),
        ("cannot be put", lambda view: (
            view.increment(COUNTERS, {"tenant": tenant, "day": "d", "orders": 1}),
            view.put(COUNTERS, {"tenant": tenant, "day": "d", "orders": 5, "cents": 0}),
        )),
        ("put or deleted", lambda view: (
            view.delete(COUNTERS, tenant, "d"),
            view.increment(COUNTERS, {"tenant": tenant, "day": "d", "orders": 1}),
        )),
    ]  # fmt: skip
    for reason, attempt in attempts:
        with pytest.raises(ValueError, match=reason):
            await store.apply(projection, 0, 1, attempt)
    assert await store.checkpoint(projection) == 0
    assert await store.get(COUNTERS, tenant, "d") is None


async def test_a_large_batch_is_applied_whole(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, n) for n in range(2500)], position=2500)
    assert await store.checkpoint(projection) == 2500
    assert len(await store.find(ITEMS, where={"tenant": tenant})) == 2500


async def test_reset_empties_the_tables_and_rewinds_the_checkpoint(backend: Backend) -> None:
    tenant, projection = _names()
    table = _items(f"contract_reset_{uuid4().hex[:12]}")
    store = await _ready(backend, table)

    def write(view: ViewTransaction) -> None:
        view.put(table, _row(tenant, 1))

    await store.apply(projection, 0, 4, write)
    await store.reset(projection, [table])
    assert await store.checkpoint(projection) == 0
    assert await store.find(table) == []
    await store.apply(projection, 0, 4, write)
    assert await store.get(table, tenant, "item-001") == _row(tenant, 1)


async def test_drop_removes_the_tables_and_forgets_checkpoint_and_source(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    table = _items(f"contract_drop_{uuid4().hex[:12]}")
    kept = _items(f"contract_kept_{uuid4().hex[:12]}")
    store = await _ready(backend, table, kept)

    def write(view: ViewTransaction) -> None:
        view.put(table, _row(tenant, 1))
        view.put(kept, _row(tenant, 2))

    await store.apply(projection, 0, 4, write)
    await store.record_source(projection, str(uuid4()))
    await store.drop(projection, [table.name, f"never_created_{uuid4().hex[:12]}"])

    assert await store.checkpoint(projection) == 0
    assert await store.source(projection) is None
    assert await store.get(kept, tenant, "item-002") == _row(tenant, 2)
    await store.setup([table])  # created anew: the dropped rows are gone with the table
    assert await store.find(table) == []
    await store.apply(projection, 0, 5, write)  # and the projection starts again from 0
    assert await store.get(table, tenant, "item-001") == _row(tenant, 1)


async def test_a_table_never_set_up_is_refused_by_name_and_nothing_is_written(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    missing = _items(f"contract_missing_{uuid4().hex[:12]}")
    await _put_rows(store, projection, [_row(tenant, 1)], position=3)

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, _row(tenant, 2))
        view.put(missing, _row(tenant, 3))

    with pytest.raises(TableMissing) as refused:
        await store.get(missing, tenant, "item-001")
    assert refused.value.table == missing.name
    with pytest.raises(TableMissing) as refused:
        await store.find(missing, where={"tenant": tenant}, order_by=("rank",), limit=5)
    assert refused.value.table == missing.name
    with pytest.raises(TableMissing) as refused:
        await store.apply(projection, 3, 9, write)
    assert refused.value.table == missing.name
    assert await store.checkpoint(projection) == 3
    assert await store.get(ITEMS, tenant, "item-002") is None


async def test_a_dropped_table_is_refused_like_one_never_set_up(backend: Backend) -> None:
    _, projection = _names()
    table = _items(f"contract_gone_{uuid4().hex[:12]}")
    store = await _ready(backend, table)
    await store.drop(projection, [table.name])

    with pytest.raises(TableMissing) as refused:
        await store.find(table)
    assert refused.value.table == table.name


# --- queries -----------------------------------------------------------------------------------


async def test_get_returns_the_row_by_key_or_none(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, 1)])
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1)
    assert await store.get(ITEMS, tenant, "item-002") is None
    assert await store.get(ITEMS, f"tenant-{uuid4()}", "item-001") is None


async def test_rows_returned_are_independent_copies(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    await _put_rows(store, projection, [_row(tenant, 1)])
    row = await store.get(ITEMS, tenant, "item-001")
    assert row is not None
    row["details"]["tags"].append("mutated")
    row["rank"] = -1
    assert await store.get(ITEMS, tenant, "item-001") == _row(tenant, 1)


async def test_rows_written_and_found_are_independent_copies(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    row = _row(tenant, 1)

    def write(view: ViewTransaction) -> None:
        view.put(ITEMS, row)

    await store.apply(projection, 0, 1, write)
    row["details"]["tags"].append("changed after the batch")
    [found] = await store.find(ITEMS, where={"tenant": tenant})
    assert found == _row(tenant, 1)
    found["details"]["tags"].append("mutated")
    assert await store.find(ITEMS, where={"tenant": tenant}) == [_row(tenant, 1)]


async def test_deleting_a_row_that_is_not_there_is_no_error(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)

    def write(view: ViewTransaction) -> None:
        view.delete(ITEMS, tenant, "item-404")
        view.put(TOTALS, {"tenant": tenant, "total": 0})

    await store.apply(projection, 0, 3, write)
    assert await store.checkpoint(projection) == 3
    assert await store.get(TOTALS, tenant) == {"tenant": tenant, "total": 0}


async def test_find_filters_by_where_and_orders_by_columns(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    rows = [_row(tenant, n, rank=n % 4, label=None if n % 3 == 0 else "x") for n in range(12)]
    random.shuffle(rows)
    await _put_rows(store, projection, rows)
    await _put_rows(store, f"projection-{uuid4()}", [_row(f"tenant-{uuid4()}", 1, label="x")])

    def key(row: Row) -> tuple[Any, ...]:
        return (row["rank"], row["item_id"])

    found = await store.find(ITEMS, where={"tenant": tenant}, order_by=("rank", "item_id"))
    assert found == sorted(rows, key=key)
    labelled = await store.find(
        ITEMS, where={"tenant": tenant, "label": "x"}, order_by=("rank", "item_id")
    )
    assert labelled == sorted((r for r in rows if r["label"] == "x"), key=key)
    unlabelled = await store.find(
        ITEMS, where={"tenant": tenant, "label": None}, order_by=("item_id",)
    )
    assert [r["item_id"] for r in unlabelled] == ["item-000", "item-003", "item-006", "item-009"]
    limited = await store.find(ITEMS, where={"tenant": tenant}, order_by=("item_id",), limit=3)
    assert [r["item_id"] for r in limited] == ["item-000", "item-001", "item-002"]


async def test_keyset_pagination_visits_every_row_once_in_order(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    rows = [_row(tenant, n, rank=random.randrange(5)) for n in range(23)]
    await _put_rows(store, projection, rows)
    order_by = ("rank", "item_id")
    pages: list[list[Row]] = []
    after: list[Any] | None = None
    while True:
        page = await store.find(
            ITEMS, where={"tenant": tenant}, order_by=order_by, after=after, limit=5
        )
        if not page:
            break
        pages.append(page)
        after = [page[-1][name] for name in order_by]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    visited = [row for page in pages for row in page]
    assert visited == sorted(rows, key=lambda row: (row["rank"], row["item_id"]))


async def test_descending_keyset_pagination_visits_every_row_once_newest_first(
    backend: Backend,
) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    rows = [_row(tenant, n, rank=random.randrange(5)) for n in range(23)]
    await _put_rows(store, projection, rows)
    order_by = ("rank", "item_id")
    visited: list[Row] = []
    sizes: list[int] = []
    after: list[Any] | None = None
    while True:
        page = await store.find(
            ITEMS,
            where={"tenant": tenant},
            order_by=order_by,
            after=after,
            limit=5,
            descending=True,
        )
        if not page:
            break
        sizes.append(len(page))
        visited.extend(page)
        after = [page[-1][name] for name in order_by]
    assert sizes == [5, 5, 5, 5, 3]
    assert visited == sorted(rows, key=lambda row: (row["rank"], row["item_id"]), reverse=True)


async def test_json_and_timestamp_values_round_trip(backend: Backend) -> None:
    tenant, projection = _names()
    store = await _ready(backend)
    new_york = timezone(timedelta(hours=-5))
    rows = [
        _row(tenant, 1, details={"ü": [1, 2.5, "x", None, True], "nested": {"n": -3}}),
        _row(tenant, 2, details=["a", {"b": []}], seen_at=datetime(1999, 12, 31, 23, 0, 0, 1, UTC)),
        _row(tenant, 3, details="just text", seen_at=datetime(2024, 5, 1, 9, 30, tzinfo=new_york)),
        _row(tenant, 4, details=None, label=None),
        _row(tenant, 5, details=42, seen_at=datetime(2024, 5, 1, 14, 29, 59, 999_999, UTC)),
    ]
    await _put_rows(store, projection, rows)
    for row in rows:
        stored = await store.get(ITEMS, tenant, row["item_id"])
        assert stored == row
        assert stored is not None
        assert stored["seen_at"].utcoffset() is not None
    by_time = await store.find(ITEMS, where={"tenant": tenant}, order_by=("seen_at",))
    # 09:30 in New York is 14:30 UTC: ordering follows the instant, not the written text
    assert [r["item_id"] for r in by_time] == [
        "item-002",
        "item-001",
        "item-004",
        "item-005",
        "item-003",
    ]
    moment = datetime(2024, 5, 1, 14, 30, tzinfo=UTC)
    at_moment = await store.find(ITEMS, where={"tenant": tenant, "seen_at": moment})
    assert [r["item_id"] for r in at_moment] == ["item-003"]


async def test_a_projection_records_the_store_it_is_built_from_until_it_is_reset(
    backend: Backend,
) -> None:
    store, projection, other = backend.read, f"p_{uuid4().hex[:8]}", f"p_{uuid4().hex[:8]}"
    first, second, third = (str(uuid4()) for _ in range(3))  # store ids are UUIDs
    await store.setup([ITEMS])
    assert await store.source(projection) is None

    await store.record_source(projection, first)
    await store.record_source(other, second)
    assert await store.source(projection) == first
    await store.record_source(projection, third)
    assert await store.source(projection) == third

    await store.reset(projection, [])
    assert await store.source(projection) is None
    assert await store.source(other) == second


#: The contract is every test of this module: ``from ... import *`` brings them all.
__all__ = sorted(name for name in dict(globals()) if name.startswith("test_"))
