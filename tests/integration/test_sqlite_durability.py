"""A process appending to SQLite is killed mid-stream: acknowledged appends survive, whole.

The child prints an ``ACK`` line only after an append's ``await`` returned. After ``SIGKILL``
every acknowledged append must be in the store, and no append may be half there: each stream's
versions are contiguous and made of whole 3-event appends. (A killed process does not lose the
operating system's buffers, so this proves the commit protocol, not the fsync; that is what
``synchronous=FULL`` is for.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cqrskit import Backend
from cqrskit.backends import open_backend
from cqrskit.sqlite import SqliteEventStore, SqliteReadStore

CHILD = r"""
import asyncio, sys, uuid
from datetime import UTC, datetime

import msgspec

from cqrskit.messages import NewEvent
from cqrskit import Backend
from cqrskit.backends import open_backend
from cqrskit.sqlite import SqliteEventStore, SqliteReadStore


async def writer(store, number):
    stream = f"writer-{number}"
    version = await store.stream_version(stream)  # a restarted writer continues its stream
    count = version // 3
    while True:
        events = [
            NewEvent(
                event_id=uuid.uuid4(),
                event_type="Ticked",
                schema_version=1,
                data=msgspec.json.encode({"append": count, "part": part}),
                metadata=b"{}",
                recorded_at=datetime.now(UTC),
            )
            for part in range(3)
        ]
        result = await store.append(stream, events, version)
        version = result.version
        print(f"ACK {stream} {result.version} {result.position}", flush=True)
        count += 1


async def main():
    store = await SqliteEventStore.open(sys.argv[1])
    await asyncio.gather(*(writer(store, number) for number in range(16)))


asyncio.run(main())
"""

PARTS = 3


def run_and_kill(path: Path, acks_before_kill: int) -> list[tuple[str, int, int]]:
    """Run the child until it acknowledged ``acks_before_kill`` appends, SIGKILL it, and
    return every acknowledgement it printed."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        lines: list[str] = []
        try:
            for line in child.stdout:
                lines.append(line)
                if len(lines) >= acks_before_kill:
                    break
            os.kill(child.pid, signal.SIGKILL)
            lines.extend(child.stdout)  # acknowledged before the kill, still in the pipe
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
    acks = []
    for line in lines:
        _, stream, version, position = line.split()
        acks.append((stream, int(version), int(position)))
    return acks


async def check_store(path: Path, acks: list[tuple[str, int, int]]) -> int:
    store = await SqliteEventStore.open(path)
    try:
        head = await store.head_position()
        everything = await store.read_all(0, head + 1)
        assert [e.position for e in everything] == list(range(1, head + 1))
        streams = {e.stream_id for e in everything}
        for stream in streams:
            events = await store.read_stream(stream)
            assert [e.stream_version for e in events] == list(range(1, len(events) + 1))
            assert len(events) % PARTS == 0, f"{stream}: a half-written append"
            payloads = [msgspec.json.decode(e.data) for e in events]
            assert payloads == [
                {"append": n // PARTS, "part": n % PARTS} for n in range(len(events))
            ]
        by_position = {e.position: e for e in everything}
        for stream, version, position in acks:
            stored = by_position.get(position)
            assert stored is not None, f"acknowledged append lost: {stream} v{version}"
            assert (stored.stream_id, stored.stream_version) == (stream, version)
        return head
    finally:
        await store.close()


@pytest.mark.parametrize("acks_before_kill", [50, 400, 1500])
async def test_a_killed_writer_loses_no_acknowledged_append_and_half_writes_none(
    tmp_path: Path, acks_before_kill: int
) -> None:
    path = tmp_path / "events.db"
    acks = await asyncio.to_thread(run_and_kill, path, acks_before_kill)
    assert len(acks) >= acks_before_kill
    head = await check_store(path, acks)
    assert head >= len(acks) * PARTS
    # the store keeps working after the crash: a restarted writer continues the streams
    more = await asyncio.to_thread(run_and_kill, path, 20)
    await check_store(path, acks + more)


def _synchronous_modes(backend: Backend) -> set[int]:
    """``PRAGMA synchronous`` of every connection the backend writes or reads with."""
    events, read = backend.events, backend.read
    assert isinstance(events, SqliteEventStore)
    assert isinstance(read, SqliteReadStore)
    connections = [
        events._appends._connection,
        events._readers.get(),
        read._writer,
        read._readers.get(),
    ]
    return {connection.execute("PRAGMA synchronous").fetchone()[0] for connection in connections}


FULL, NORMAL = 2, 1  # SQLite's numbers for the two modes


async def test_every_connection_runs_synchronous_full_unless_the_url_opts_out(
    tmp_path: Path,
) -> None:
    # An acknowledged append survives power loss only if its commit was fsynced (FULL); the
    # URL option trades that for speed (NORMAL: survives a crash of the process only).
    safe = await open_backend(f"sqlite:///{tmp_path / 'safe.db'}")
    risky = await open_backend(
        f"sqlite:///{tmp_path / 'risky.db'}?risk_recent_commits_on_power_loss=1"
    )
    explicit = await open_backend(
        f"sqlite:///{tmp_path / 'explicit.db'}?risk_recent_commits_on_power_loss=0"
    )
    try:
        assert _synchronous_modes(safe) == {FULL}
        assert _synchronous_modes(risky) == {NORMAL}
        assert _synchronous_modes(explicit) == {FULL}
    finally:
        for backend in (safe, risky, explicit):
            await backend.close()
