"""What only the SQLite backend does: files, URLs, group commit, several processes, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import msgspec
import pytest

from cqrskit.backends import open_backend
from cqrskit.errors import ConcurrencyError, ConfigurationError, CqrsKitError, StoreUnavailable
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.migrations import latest_version
from cqrskit.readmodel import Column, ColumnType, Table, ViewTransaction
from cqrskit.sqlite import SqliteEventStore, SqliteReadStore
from cqrskit.sqlite._common import parse_url
from cqrskit.sqlite._schema import EVENTS
from cqrskit.sqlite._writer import GroupCommit
from cqrskit.store import NO_STREAM
from tests.support.sqlite import queued, writer_is_committing
from tests.support.waiting import until


def event(n: int = 0, event_id: UUID | None = None) -> NewEvent:
    return NewEvent(
        event_id=event_id or uuid4(),
        event_type="Happened",
        schema_version=1,
        data=b'{"n":%d}' % n,
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )


async def test_a_url_opens_the_events_file_and_a_sibling_read_model_file(tmp_path: Path) -> None:
    backend = await open_backend(f"sqlite:///{tmp_path / 'new' / 'dir' / 'orders.db'}")
    try:
        assert isinstance(backend.events, SqliteEventStore)
        assert isinstance(backend.read, SqliteReadStore)
        await backend.events.append("s", [event()], NO_STREAM)
    finally:
        await backend.close()
    files = {path.name for path in (tmp_path / "new" / "dir").iterdir()}
    assert {"orders.db", "orders.read.db"} <= files
    with sqlite3.connect(tmp_path / "new" / "dir" / "orders.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (1,)
        latest = latest_version(EVENTS.migrations)
        assert connection.execute("SELECT * FROM cqrskit_schema").fetchall() == [("events", latest)]


def test_urls_name_a_file_and_only_known_options() -> None:
    assert parse_url("sqlite:///relative/orders.db") == (Path("relative/orders.db"), False)
    assert parse_url("sqlite:////abs/orders.db") == (Path("/abs/orders.db"), False)
    risky = parse_url("sqlite:///o.db?risk_recent_commits_on_power_loss=1")
    assert risky == (Path("o.db"), True)
    option = "sqlite:///o.db?risk_recent_commits_on_power_loss="
    for value, expected in (("true", True), ("Yes", True), ("ON", True), ("0", False)):
        assert parse_url(option + value) == (Path("o.db"), expected), value
    assert parse_url(option + "off&risk_recent_commits_on_power_loss=1")[1] is True
    for bad in ("sqlite://", "sqlite:///", "postgres:///x"):
        with pytest.raises(ConfigurationError, match=r"invalid SQLite URL .*sqlite:///path"):
            parse_url(bad)
    for bad in ("sqlite:///o.db?synchronous=off", option, option + "maybe", "sqlite:///o.db?x="):
        with pytest.raises(ConfigurationError, match="unsupported SQLite URL option"):
            parse_url(bad)


async def test_a_file_that_cannot_be_opened_raises_store_unavailable(tmp_path: Path) -> None:
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StoreUnavailable, match=r"garbage\.db"):
        await SqliteEventStore.open(not_a_database)
    with pytest.raises(StoreUnavailable):
        await open_backend(f"sqlite:///{tmp_path}")  # a directory
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable):
        await open_backend(f"sqlite:///{blocker / 'orders.db'}")  # its parent is a file


async def test_a_schema_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await (await SqliteEventStore.open(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE cqrskit_schema SET version = 99")
    with pytest.raises(StoreUnavailable, match="newer"):
        await SqliteEventStore.open(path)


async def test_a_failing_append_in_a_group_leaves_the_others_committed(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SqliteEventStore.open(path)
    taken = uuid4()
    await store.append("taken", [event(event_id=taken)], NO_STREAM)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the appends below queue up
    try:
        # the writer is parked on a first append, so the four below meet in the next group
        plug = asyncio.ensure_future(store.append("plug", [event(0)], NO_STREAM))
        await until(lambda: writer_is_committing(store), what="the writer taking the plug")
        appends = asyncio.gather(
            store.append("first", [event(1)], NO_STREAM),
            store.append("first", [event(2)], NO_STREAM),  # loses to the one above
            store.append("bad", [event(3), event(4, event_id=taken), event(5)], NO_STREAM),
            store.append("last", [event(6), event(7)], NO_STREAM),
            return_exceptions=True,
        )
        await until(lambda: queued(store) == 4, what="four appends queued")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    first, second, bad, last = await appends
    assert (await plug).position == 2
    assert not isinstance(first, BaseException)
    assert not isinstance(last, BaseException)
    assert isinstance(second, ConcurrencyError)
    assert isinstance(bad, CqrsKitError)
    assert "bad" in str(bad)
    assert await store.read_stream("bad") == []
    assert [e.position for e in await store.read_all(0)] == [1, 2, 3, 4, 5]
    assert (first.position, last.position) == (3, 5)
    await store.close()


async def test_appends_from_another_process_reach_a_waiting_subscriber(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    subscriber, other = await SqliteEventStore.open(path), await SqliteEventStore.open(path)
    received: list[str] = []
    empty_reads = 0
    read_all = subscriber.read_all

    async def counting_read_all(after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        nonlocal empty_reads
        found = await read_all(after, limit)
        empty_reads += not found
        return found

    subscriber.read_all = counting_read_all  # type: ignore[method-assign]

    async def consume() -> None:
        async for batch in subscriber.subscribe_all(0, 100):
            received.extend(e.stream_id for e in batch)
            if len(received) == 2:
                return

    try:
        task = asyncio.create_task(consume())
        # the subscriber is idle: it has read, found nothing, and now polls the file
        await until(lambda: empty_reads >= 1, what="the subscriber catching up")
        await other.append("a", [event()], NO_STREAM)
        await other.append("b", [event()], NO_STREAM)
        async with asyncio.timeout(10):
            await task
        assert received == ["a", "b"]
    finally:
        await subscriber.close()
        await other.close()


async def test_two_writers_on_one_file_keep_versions_and_positions_consistent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    stores = [await SqliteEventStore.open(path) for _ in range(2)]
    await stores[0].append("shared", [event()], NO_STREAM)
    outcomes = await asyncio.gather(
        *(stores[n % 2].append("shared", [event(n)], 1) for n in range(10)),
        *(stores[n % 2].append(f"own-{n}", [event(n), event(n)], NO_STREAM) for n in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes[:10]) == 1
    assert all(not isinstance(o, BaseException) for o in outcomes[10:])
    positions = [e.position for e in await stores[1].read_all(0)]
    assert positions == list(range(1, 23))
    for store in stores:
        await store.close()


async def test_a_closed_store_refuses_appends(tmp_path: Path) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.append("s", [event()], NO_STREAM)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_appends_fail_instead_of_hanging_when_the_writer_thread_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqliteEventStore.open(tmp_path / "events.db")

    def broken(self: object, batch: object) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(GroupCommit, "_commit", broken)
    async with asyncio.timeout(10):
        with pytest.raises(StoreUnavailable, match="a bug in the writer"):
            await store.append("s", [event()], NO_STREAM)
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.append("s", [event()], NO_STREAM)
    await store.close()


async def test_a_full_disk_refuses_appends_and_batches_cleanly_and_then_they_work(
    tmp_path: Path,
) -> None:
    backend = await open_backend(f"sqlite:///{tmp_path / 'events.db'}")
    events, read = backend.events, backend.read
    assert isinstance(events, SqliteEventStore)
    assert isinstance(read, SqliteReadStore)
    table = Table(
        "blobs", (Column("id", ColumnType.TEXT), Column("body", ColumnType.TEXT)), ("id",)
    )
    try:
        await events.append("s", [event()], NO_STREAM)
        await read.setup([table])
        # Given files that cannot grow (SQLite's own cap on their size: a full disk)
        writers = (events._appends._connection, read._writer)
        for connection in writers:
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            connection.execute(f"PRAGMA max_page_count = {pages}")
        big = NewEvent(**{**msgspec.structs.asdict(event()), "data": b"x" * 200_000})
        # When an append or a projection batch needs room
        with pytest.raises(StoreUnavailable) as refused_append:
            await events.append("s", [big], 1)

        def write(view: ViewTransaction) -> None:
            view.put(table, {"id": "a", "body": "y" * 200_000})

        with pytest.raises(StoreUnavailable) as refused_batch:
            await read.apply("p", 0, 1, write)
        # Then each is refused whole, saying which file, what and why
        for refused, path, doing in (
            (refused_append, events.path, "append"),
            (refused_batch, read.path, "applying a projection batch"),
        ):
            assert str(refused.value) == (
                f"SQLite database {path}: {doing} failed: database or disk is full"
            )
        assert await events.stream_version("s") == 1
        assert (await read.checkpoint("p"), await read.get(table, "a")) == (0, None)
        # ... and once there is room, both work again
        for connection in writers:
            connection.execute("PRAGMA max_page_count = 1073741823")
        assert (await events.append("s", [big], 1)).version == 2
        await read.apply("p", 0, 1, write)
        assert await read.checkpoint("p") == 1
    finally:
        await backend.close()
