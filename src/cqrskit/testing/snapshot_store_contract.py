"""The snapshot-store contract: what every :class:`~cqrskit.snapshots.SnapshotStore` must do.

Run it against a backend by importing it into a test module of a suite that provides an async
``backend`` fixture (a :class:`cqrskit.backends.Backend` whose ``snapshots`` is set)::

    from cqrskit.testing.snapshot_store_contract import *  # noqa: F403

The tests use random stream ids, so they can share a database with other tests.
"""

from __future__ import annotations

import asyncio
import os
import random
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

from cqrskit.snapshots import Snapshot, SnapshotStore
from cqrskit.store import Backend


def _store(backend: Backend) -> SnapshotStore:
    assert backend.snapshots is not None, "this backend keeps no snapshots"
    return backend.snapshots


def _snapshot(stream_id: str, stream_version: int, **fields: object) -> Snapshot:
    values: dict[str, object] = {
        "stream_id": stream_id,
        "kind": "ContractState",
        "state_version": 1,
        "state_shape": "shape-a",
        "stream_version": stream_version,
        "state": f'{{"n":{stream_version}}}'.encode(),
        "taken_at": datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        **fields,
    }
    return Snapshot(**values)  # type: ignore[arg-type]


def _stream() -> str:
    return f"contract-snapshot-{uuid4()}"


async def test_a_stream_without_a_snapshot_loads_none(backend: Backend) -> None:
    assert await _store(backend).load(_stream(), "ContractState", 1) is None


async def test_a_saved_snapshot_loads_back_exactly(backend: Backend) -> None:
    store, stream = _store(backend), _stream()
    state = os.urandom(300) + b"\x00\xff" + "é".encode()
    taken_at = datetime(2026, 3, 1, 13, 0, 0, 654321, tzinfo=timezone(timedelta(hours=1)))
    saved = _snapshot(stream, 500, state=state, taken_at=taken_at, state_shape="shape-x")

    await store.save(saved)

    loaded = await store.load(stream, "ContractState", 1)
    assert loaded is not None
    assert loaded.taken_at == taken_at  # the same instant, in whatever zone
    assert (loaded.stream_id, loaded.kind, loaded.state_version) == (stream, "ContractState", 1)
    assert (loaded.state_shape, loaded.stream_version, loaded.state) == ("shape-x", 500, state)


async def test_a_large_state_loads_back_whole(backend: Backend) -> None:
    store, stream = _store(backend), _stream()
    state = random.Random(7).randbytes(512 * 1024)
    await store.save(_snapshot(stream, 10, state=state))
    loaded = await store.load(stream, "ContractState", 1)
    assert loaded is not None
    assert loaded.state == state


async def test_a_newer_snapshot_replaces_an_older_one_never_the_reverse(backend: Backend) -> None:
    store, stream = _store(backend), _stream()
    await store.save(_snapshot(stream, 100))
    await store.save(_snapshot(stream, 300))
    await store.save(_snapshot(stream, 200))  # a slower writer, late
    await store.save(_snapshot(stream, 300, state=b"other"))  # the same version again

    loaded = await store.load(stream, "ContractState", 1)
    assert loaded is not None
    assert (loaded.stream_version, loaded.state) == (300, b'{"n":300}')


async def test_a_snapshot_of_another_shape_replaces_the_stored_one(backend: Backend) -> None:
    store, stream = _store(backend), _stream()
    await store.save(_snapshot(stream, 300))
    await store.save(_snapshot(stream, 200, state_shape="shape-b"))  # the state type changed

    loaded = await store.load(stream, "ContractState", 1)
    assert loaded is not None
    assert (loaded.state_shape, loaded.stream_version) == ("shape-b", 200)


async def test_kinds_state_versions_and_streams_are_kept_apart(backend: Backend) -> None:
    store, stream, other = _store(backend), _stream(), _stream()
    await store.save(_snapshot(stream, 10))
    await store.save(_snapshot(stream, 20, kind="OtherState"))
    await store.save(_snapshot(stream, 30, state_version=2))
    await store.save(_snapshot(other, 40))

    found = [
        await store.load(stream, "ContractState", 1),
        await store.load(stream, "OtherState", 1),
        await store.load(stream, "ContractState", 2),
        await store.load(other, "ContractState", 1),
    ]
    assert [s.stream_version if s else None for s in found] == [10, 20, 30, 40]
    assert await store.load(stream, "OtherState", 2) is None


async def test_concurrent_saves_leave_the_newest_snapshot(backend: Backend) -> None:
    store, stream = _store(backend), _stream()
    versions = list(range(1, 41))
    random.Random(3).shuffle(versions)

    await asyncio.gather(*(store.save(_snapshot(stream, version)) for version in versions))

    loaded = await store.load(stream, "ContractState", 1)
    assert loaded is not None
    assert (loaded.stream_version, loaded.state) == (40, b'{"n":40}')


__all__ = sorted(name for name in dict(globals()) if name.startswith("test_"))
