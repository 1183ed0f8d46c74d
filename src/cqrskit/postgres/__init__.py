"""The PostgreSQL backend: event store, read store and schema migrations (psycopg 3).

Open it by URL with :func:`cqrskit.backends.open_backend` (``postgresql://user@host/db``);
:func:`open_backend` here does the same, and :func:`migrate` creates or upgrades the schema on
its own (``orders db migrate``). Tables go into the first schema of the connection's
``search_path`` (choose one with ``?options=-csearch_path%3Dmyschema``).

The global order is gap-safe under any number of concurrent writers: see
``docs/postgres-ordering.md``. Requires PostgreSQL 13 or later (``xid8``).
"""

from __future__ import annotations

from cqrskit.postgres._common import MAX_EVENTS_PER_TRANSACTION
from cqrskit.postgres._events import PostgresEventStore
from cqrskit.postgres._read import PostgresReadStore
from cqrskit.postgres._schema import LATEST_VERSION, migrate
from cqrskit.postgres._snapshots import PostgresSnapshotStore
from cqrskit.store import Backend

__all__ = [
    "LATEST_VERSION",
    "MAX_EVENTS_PER_TRANSACTION",
    "PostgresEventStore",
    "PostgresReadStore",
    "PostgresSnapshotStore",
    "migrate",
    "open_backend",
    "open_read_store",
]


async def open_backend(url: str) -> Backend:
    """Migrate the database at ``url`` if needed and open its event, read and snapshot stores.

    Raises :class:`~cqrskit.StoreUnavailable` (with the host and database, never the password)
    when the server cannot be reached, refuses the login or lacks privileges.
    """
    await migrate(url)
    events = await PostgresEventStore.open(url)
    try:
        read = await PostgresReadStore.open(url)
    except BaseException:
        await events.close()
        raise
    try:
        snapshots = await PostgresSnapshotStore.open(url)
    except BaseException:
        await read.close()
        await events.close()
        raise
    return Backend(url, events, read, snapshots)


async def open_read_store(url: str) -> PostgresReadStore:
    """Migrate the database at ``url`` if needed and open its read store alone."""
    await migrate(url)
    return await PostgresReadStore.open(url)
