"""How the test suite opens each backend. A new backend adds a name and a branch here."""

from __future__ import annotations

import pytest

from cqrskit import Backend
from cqrskit.backends import open_backend

BACKEND_NAMES = ["memory", "sqlite", "postgres"]
#: the backends whose data outlives the process (for crash and multi-process tests)
DURABLE_BACKEND_NAMES = [name for name in BACKEND_NAMES if name != "memory"]


async def open_test_backend(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Backend:
    if name == "memory":
        return await open_backend("memory://")
    if name == "sqlite":
        return await open_backend(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'events.db'}")
    if name == "postgres":
        from tests.support.postgres import open_postgres_backend

        return await open_postgres_backend(request)
    raise ValueError(f"unknown test backend {name!r}")
