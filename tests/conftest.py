"""Shared fixtures: one ``backend`` fixture parametrised over every event-store backend.

Each backend module under ``tests/backends/`` ... see ``open_test_backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cqrskit.backends import Backend
from tests.support.backends import BACKEND_NAMES, open_test_backend


@pytest.fixture(params=BACKEND_NAMES)
async def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Backend]:
    opened = await open_test_backend(request.param, tmp_path_factory, request)
    try:
        yield opened
    finally:
        await opened.close()
