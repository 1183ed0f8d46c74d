"""Shared fixtures: ``backend`` (every backend), ``durable_backend`` (those with files) and
``pg_backend`` (a fresh PostgreSQL backend).

A new backend adds its name and how to open it in ``tests/support/backends.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from cqrskit import Backend
from tests.support.backends import BACKEND_NAMES, DURABLE_BACKEND_NAMES, open_test_backend

# CI replays a fixed set of property-based examples (`.ci/run` sets HYPOTHESIS_PROFILE=ci), so
# a landing never hinges on luck; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


async def _opened(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    opened = await open_test_backend(request.param, tmp_path_factory, request)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=BACKEND_NAMES)
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    """Each backend in turn, freshly opened and empty."""
    async for opened in _opened(request, tmp_path_factory):
        yield opened


@pytest.fixture(params=DURABLE_BACKEND_NAMES)
async def durable_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    """Each backend whose data outlives the process (for crash and multi-process tests)."""
    async for opened in _opened(request, tmp_path_factory):
        yield opened


@pytest.fixture
async def pg_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A PostgreSQL backend in a schema of its own, freshly opened and empty."""
    from cqrskit.postgres import open_backend
    from tests.support.postgres import fresh_url

    opened = await open_backend(fresh_url(request))
    try:
        yield opened
    finally:
        await opened.close()
