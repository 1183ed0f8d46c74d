"""End-to-end fixtures: the HTTP service on a real uvicorn server, over each durable backend.

``server`` is shared by the tests of a module (they use random ids); ``start_server`` gives a
test its own server on a fresh database when it needs exact totals. Both wait for the read
model (a read with a consistency token) up to the tests' deadline: a busy machine makes the
projections slower, never wrong, and a test must not fail on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orders.app import Settings
from tests.e2e.server import ServerThread
from tests.support.waiting import DEADLINE

E2E_BACKENDS = ["sqlite", "postgres"]

StartServer = Callable[..., ServerThread]


def fresh_db_url(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A URL to an empty database of backend ``name``."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('orders') / 'orders.db'}"
    if name == "postgres":
        from tests.support.postgres import fresh_url

        return fresh_url(request)
    raise ValueError(f"unknown e2e backend {name!r}")


@pytest.fixture(scope="module", params=E2E_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def server(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerThread]:
    url = fresh_db_url(backend_name, tmp_path_factory, request)
    running = ServerThread(Settings(db_url=url, consistency_timeout=DEADLINE)).start()
    yield running
    running.stop()


@pytest.fixture
def start_server(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> StartServer:
    def start(*, run_projections: bool = True, **settings: Any) -> ServerThread:
        db_url = fresh_db_url(backend_name, tmp_path_factory, request)
        settings.setdefault("consistency_timeout", DEADLINE)
        running = ServerThread(Settings(db_url=db_url, **settings), run_projections)
        # Finalizers run last-in first-out: the server stops before its database is dropped.
        request.addfinalizer(running.start().stop)
        return running

    return start


def new_id(prefix: str) -> str:
    """A random id, so tests can share a database."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
