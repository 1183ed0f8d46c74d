"""How the test suite opens each backend. A new backend adds a name and a branch here."""

from __future__ import annotations

import pytest

from cqrskit.backends import Backend, open_backend

BACKEND_NAMES = ["memory"]


async def open_test_backend(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Backend:
    if name == "memory":
        return await open_backend("memory://")
    raise ValueError(f"unknown test backend {name!r}")
