"""Opening a backend (event store + read store) from a URL.

``memory://`` (tests), ``sqlite:///path/to/events.db`` or a plain path (the default, embedded),
``postgresql://user@host/db`` (production). Adapter modules are imported only when their URL
is used, so a driver is never loaded by an application that does not need it.
"""

from __future__ import annotations

from pathlib import Path

from cqrskit.errors import ConfigurationError
from cqrskit.store import Backend


def normalise_url(url: str) -> str:
    """``url`` with a plain file path turned into a ``sqlite:///`` URL."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    return url


async def open_backend(url: str) -> Backend:
    """Open (and create the schema of) the backend ``url`` names.

    Raises :class:`ConfigurationError` for an unsupported URL and :class:`StoreUnavailable`
    when the database cannot be reached.
    """
    url = normalise_url(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from cqrskit.memory import InMemoryEventStore, InMemoryReadStore

        return Backend(url, InMemoryEventStore(), InMemoryReadStore())
    if scheme == "sqlite":
        from cqrskit import sqlite

        return await sqlite.open_backend(url)
    if scheme in ("postgresql", "postgres"):
        from cqrskit import postgres

        return await postgres.open_backend(url)
    raise ConfigurationError(
        f"unsupported store URL {url!r}: use sqlite:///path, postgresql://… or memory://"
    )
