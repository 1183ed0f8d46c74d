"""Opening a backend (event store + read store) from a URL.

``memory://`` (tests), ``sqlite:///path/to/events.db`` or a plain path (the default, embedded),
``postgresql://user@host/db`` (production, needs the ``cqrskit[postgres]`` extra). Adapter
modules are imported only when their URL is used, so a driver is never loaded by an
application that does not need it.
"""

from __future__ import annotations

from cqrskit.errors import ConfigurationError
from cqrskit.store import Backend
from cqrskit.urls import normalise_url, redact, scheme_of

__all__ = ["open_backend"]


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
        try:
            from cqrskit import postgres
        except ModuleNotFoundError as error:
            if error.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ConfigurationError(
                f"{redact(url)} needs the PostgreSQL driver, which is not installed: "
                "pip install 'cqrskit[postgres]'"
            ) from error
        return await postgres.open_backend(url)
    raise ConfigurationError(
        f"unsupported store URL {redact(url)!r}: use sqlite:///path, postgresql://… or memory://"
    )
