"""SQLite backend: an event store with group commit and a read store, on stdlib ``sqlite3``.

``sqlite:///path/to/orders.db`` opens two files: the event store (and its snapshots) in
``orders.db`` and the read model in the sibling ``orders.read.db``. SQLite has one write lock
per file; keeping projection writes in their own file means a rebuilding projection never makes
an append wait, and the read model can be deleted and rebuilt without touching the events.
Nothing needs both files in one transaction: a projection's writes and its checkpoint live
together in the read file.

Both files use WAL (readers never block the writer) and ``synchronous=FULL``: an acknowledged
append or projection batch has been fsynced and survives a crash of the process or the machine.
``?risk_recent_commits_on_power_loss=1`` selects ``synchronous=NORMAL``, which survives a crash
of the process but may lose the last commits if the machine loses power.

The event store has one writer connection owned by a writer thread. Concurrent appends queue
up while the previous transaction is being fsynced; the thread then takes them all into one
transaction (group commit), each with its own version and idempotency checks, so one refused
append never affects the others, and one fsync acknowledges them all (see
``cqrskit.sqlite._writer``). Reads run on the calling thread, each thread with its own read
connection: a point read costs less than a hop to a worker thread. Several processes may share
the files: SQLite's lock serialises their writers (with a busy timeout), and an idle
subscriber notices another process's appends by polling the head every few milliseconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cqrskit.sqlite._common import parse_url, unavailable
from cqrskit.sqlite._events import SqliteEventStore
from cqrskit.sqlite._read import SqliteReadStore
from cqrskit.sqlite._snapshots import SqliteSnapshotStore
from cqrskit.store import Backend

__all__ = [
    "SqliteEventStore",
    "SqliteReadStore",
    "SqliteSnapshotStore",
    "open_backend",
    "open_read_store",
    "read_model_path",
]


def read_model_path(path: Path) -> Path:
    """The read-model file that goes with the event store file ``path``."""
    return path.with_name(f"{path.stem}.read{path.suffix}")


async def open_backend(url: str) -> Backend:
    """The SQLite backend for ``sqlite:///path/to/file.db`` (see the module docstring).

    Creates the file, its parent directories and the schema if needed. Raises
    :class:`ConfigurationError` for a malformed URL and :class:`StoreUnavailable` when the
    files cannot be created or opened.
    """
    path, risky = parse_url(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unavailable(path, "creating its directory", error) from error
    events = await SqliteEventStore.open(path, risk_recent_commits_on_power_loss=risky)
    try:
        read = await SqliteReadStore.open(
            read_model_path(path), risk_recent_commits_on_power_loss=risky
        )
    except BaseException:
        await events.close()
        raise
    try:
        snapshots = await asyncio.to_thread(
            SqliteSnapshotStore, path, risk_recent_commits_on_power_loss=risky
        )
    except BaseException:
        await read.close()
        await events.close()
        raise
    return Backend(url, events, read, snapshots)


async def open_read_store(url: str) -> SqliteReadStore:
    """A read store alone, in exactly the file ``sqlite:///path/to/file.db`` names (for a read
    model fed from elsewhere, such as a scale-out node's). Raises as :func:`open_backend`."""
    path, risky = parse_url(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise unavailable(path, "creating its directory", error) from error
    return await SqliteReadStore.open(path, risk_recent_commits_on_power_loss=risky)
