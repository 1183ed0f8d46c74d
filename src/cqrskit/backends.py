"""Opening a backend (event store + read store) from a URL.

``memory://`` (tests), ``sqlite:///path/to/events.db`` or a plain path (the default, embedded),
``postgresql://user@host/db`` (production, needs the ``cqrskit[postgres]`` extra). Adapter
modules are imported only when their URL is used, so a driver is never loaded by an
application that does not need it.
"""

from __future__ import annotations

from types import ModuleType

from cqrskit.errors import ConfigurationError
from cqrskit.readmodel import ReadStore
from cqrskit.store import Backend
from cqrskit.urls import normalise_url, redact, scheme_of

__all__ = ["open_backend", "open_read_store"]


async def open_backend(url: str) -> Backend:
    """Open (and create the schema of) the backend ``url`` names.

    Raises :class:`ConfigurationError` for an unsupported URL, or a PostgreSQL URL when the
    driver is not installed, and :class:`StoreUnavailable` when the database cannot be reached.
    """
    url = normalise_url(url)
    scheme = scheme_of(url)
    if scheme == "memory":
        from cqrskit.memory import InMemoryEventStore, InMemoryReadStore, InMemorySnapshotStore

        return Backend(url, InMemoryEventStore(), InMemoryReadStore(), InMemorySnapshotStore())
    if scheme == "sqlite":
        from cqrskit import sqlite

        return await sqlite.open_backend(url)
    if scheme in ("postgresql", "postgres"):
        backend: Backend = await _postgres(url).open_backend(url)
        return backend
    raise _unsupported(url)


async def open_read_store(url: str) -> ReadStore:
    """Open a read store alone (for a read model fed from elsewhere, e.g. JetStream): the
    SQLite file exactly as named (``sqlite:///node.read.db``), a PostgreSQL database or
    ``memory://``. Raises as :func:`open_backend`."""
    url = normalise_url(url)
    scheme = scheme_of(url)
    if scheme == "memory":
        from cqrskit.memory import InMemoryReadStore

        return InMemoryReadStore()
    if scheme == "sqlite":
        from cqrskit import sqlite

        return await sqlite.open_read_store(url)
    if scheme in ("postgresql", "postgres"):
        read: ReadStore = await _postgres(url).open_read_store(url)
        return read
    raise _unsupported(url)


def _postgres(url: str) -> ModuleType:
    try:
        from cqrskit import postgres
    except ModuleNotFoundError as error:
        if error.name not in ("psycopg", "psycopg_pool"):
            raise
        raise ConfigurationError(
            f"{redact(url)} needs the PostgreSQL driver, which is not installed: "
            "pip install 'cqrskit[postgres]'"
        ) from error
    return postgres


def _unsupported(url: str) -> ConfigurationError:
    return ConfigurationError(
        f"unsupported store URL {redact(url)!r}: use sqlite:///path, postgresql://… or memory://"
    )
