"""Fresh databases for each measurement: SQLite files in a scratch folder, PostgreSQL databases
created on the server named by ``CQRSKIT_PG_DSN`` and dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_dsn() -> str:
    return os.environ.get("CQRSKIT_PG_DSN", DEFAULT_PG_DSN)


@dataclass(frozen=True)
class Database:
    """A fresh, empty database: its URL for cqrskit and its settings for eventsourcing."""

    backend: str  # "memory", "sqlite" or "postgres"
    url: str
    es_env: dict[str, str]


def _with_dbname(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


def _es_postgres_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        # enough connections for 64 command threads; the default (5 + 10) would queue them
        "POSTGRES_POOL_SIZE": "16",
        "POSTGRES_MAX_OVERFLOW": "48",
        "POSTGRES_MAX_WAITING": "0",
    }


class Databases:
    """Hands out fresh databases for one benchmark run and removes them at the end."""

    def __init__(self, keep: bool = False) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="cqrskit-bench-"))
        self._run = secrets.token_hex(3)
        self._count = 0
        self._pg_names: list[str] = []
        self._keep = keep

    @property
    def scratch(self) -> Path:
        return self._scratch

    def fresh(self, backend: str, label: str) -> Database:
        self._count += 1
        name = f"bench_{self._run}_{self._count}_{label}"[:60]
        if backend == "memory":
            return Database(backend, "memory://", {"PERSISTENCE_MODULE": "eventsourcing.popo"})
        if backend == "sqlite":
            path = self._scratch / f"{name}.db"
            env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
            return Database(backend, f"sqlite:///{path}", env)
        if backend == "postgres":
            self._create_pg(name)
            url = _with_dbname(pg_dsn(), name)
            return Database(backend, url, _es_postgres_env(url))
        raise ValueError(f"unknown backend {backend!r}")

    def _create_pg(self, name: str) -> None:
        import psycopg

        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._pg_names.append(name)

    def drop(self, database: Database) -> None:
        """Remove ``database`` now (its connections must be closed)."""
        if database.backend == "postgres":
            name = urlsplit(database.url).path.lstrip("/")
            self._drop_pg(name)
        elif database.backend == "sqlite":
            path = Path(database.url.removeprefix("sqlite:///"))
            for file in path.parent.glob(f"{path.stem}*"):  # with its read model and WAL
                file.unlink(missing_ok=True)

    def _drop_pg(self, name: str) -> None:
        if self._keep or name not in self._pg_names:
            return
        import psycopg

        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._pg_names.remove(name)

    def close(self) -> None:
        for name in list(self._pg_names):
            with contextlib.suppress(Exception):
                self._drop_pg(name)
        if not self._keep:
            shutil.rmtree(self._scratch, ignore_errors=True)


def postgres_available() -> bool:
    """Whether the server of ``CQRSKIT_PG_DSN`` accepts connections."""
    import psycopg

    try:
        with psycopg.connect(pg_dsn(), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextlib.contextmanager
def databases(keep: bool = False) -> Iterator[Databases]:
    handed = Databases(keep)
    try:
        yield handed
    finally:
        handed.close()
