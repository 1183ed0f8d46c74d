"""PostgreSQL failures become one clear StoreUnavailable: where, what, and never the password."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from cqrskit.backends import open_backend
from cqrskit.errors import StoreUnavailable
from cqrskit.messages import NewEvent
from cqrskit.postgres import LATEST_VERSION, migrate
from tests.support.postgres import fresh_url, server_dsn

pytestmark = pytest.mark.postgres


def _event() -> NewEvent:
    return NewEvent(
        event_id=uuid.uuid4(),
        event_type="Happened",
        schema_version=1,
        data=b"{}",
        metadata=b"{}",
        recorded_at=datetime.now(UTC),
    )


async def test_an_unreachable_server_names_host_and_database() -> None:
    with pytest.raises(StoreUnavailable) as raised:
        await open_backend("postgresql://someone:s3cret@127.0.0.1:1/orders")
    message = str(raised.value)
    assert "someone@127.0.0.1:1/orders" in message
    assert "unavailable" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://someone:s3cret@127.0.0.1:notaport/orders",
        "postgresql://someone:s3cret@127.0.0.1/orders?nosuchoption=1",
    ],
)
async def test_a_malformed_url_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        await open_backend(url)
    assert "s3cret" not in str(raised.value)


@pytest.fixture
def role(request: pytest.FixtureRequest) -> Iterator[str]:
    """A login role with no privileges beyond connecting."""
    dsn, name = server_dsn(), f"cqrskit_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        allowed = conn.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (allowed and allowed[0]):
            reason = "the test server's user may not create roles"
            if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
                pytest.fail(f"{reason} (CQRSKIT_REQUIRE_SERVICES=1)", pytrace=False)
            pytest.skip(reason)
        conn.execute(f'CREATE ROLE "{name}" LOGIN')
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE "{name}"')


def _as(url: str, user: str) -> str:
    """``url`` logging in as ``user`` (without a password)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}@{rest.split('@', 1)[-1]}"


async def test_an_unknown_database_or_role_is_unavailable(request: pytest.FixtureRequest) -> None:
    url = fresh_url(request)
    head, _, tail = url.rpartition("/")
    database = tail.split("?", 1)[0]
    with pytest.raises(StoreUnavailable) as raised:
        await open_backend(f"{head}/no_such_db_{uuid.uuid4().hex[:6]}{tail[len(database) :]}")
    assert "no_such_db" in str(raised.value)
    with pytest.raises(StoreUnavailable):
        await open_backend(_as(url, f"nobody_{uuid.uuid4().hex[:6]}"))


async def test_missing_privileges_are_reported_and_nothing_is_created(
    request: pytest.FixtureRequest, role: str
) -> None:
    url = fresh_url(request)
    with pytest.raises(StoreUnavailable) as raised:
        await migrate(_as(url, role))  # the schema is not even visible to the role
    assert "USAGE and CREATE" in str(raised.value)
    schema = str(psycopg.conninfo.conninfo_to_dict(url)["options"]).split("=")[-1]
    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    with pytest.raises(StoreUnavailable) as raised:
        await migrate(_as(url, role))
    assert "permission denied for schema" in str(raised.value)
    assert await migrate(url) == LATEST_VERSION  # nothing half-made: the owner starts afresh


async def test_a_dropped_connection_fails_the_append_whole_and_the_store_recovers(
    request: pytest.FixtureRequest,
) -> None:
    name = f"cqrskit_drop_{uuid.uuid4().hex[:8]}"
    backend = await open_backend(f"{fresh_url(request)}&application_name={name}")
    store = backend.events
    try:
        await store.append("s", [_event()], 0)
        with psycopg.connect(server_dsn(), autocommit=True) as admin:
            cursor = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            )
            assert cursor.fetchall(), "no connection to drop"
        failures: list[str] = []
        appended = 0
        for _ in range(6):  # each dropped pooled connection fails once, then it works again
            try:
                await store.append("s", [_event()], None)
                appended += 1
            except StoreUnavailable as error:
                failures.append(str(error))
        assert failures
        assert all("unavailable" in failure for failure in failures)
        assert appended > 0
        versions = [event.stream_version for event in await store.read_stream("s")]
        assert versions == list(range(1, 2 + appended))  # a failed append wrote nothing
    finally:
        await backend.close()
