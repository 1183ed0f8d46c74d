"""What the PostgreSQL store modules share: positions, connection settings, error translation."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from cqrskit.errors import StoreUnavailable
from cqrskit.urls import redact

Connection = psycopg.AsyncConnection[TupleRow]
Pool = psycopg_pool.AsyncConnectionPool[Connection]

#: Bits of a global position that hold an event's place within its transaction.
POSITION_BITS = 20
#: The most events one transaction may append (one append, or one group-commit batch).
MAX_EVENTS_PER_TRANSACTION = 1 << POSITION_BITS
_SEQ_MASK = MAX_EVENTS_PER_TRANSACTION - 1
#: Seconds to wait for a connection before reporting the server unreachable.
CONNECT_TIMEOUT = 10
#: The channel appends notify and live subscriptions listen on.
CHANNEL = "cqrskit_events"


def encode_position(transaction_id: int, seq: int) -> int:
    """The global position of the ``seq``-th event written by ``transaction_id``."""
    return (transaction_id << POSITION_BITS) | seq


def decode_position(position: int) -> tuple[int, int]:
    """The (transaction id, sequence in transaction) a global position stands for."""
    return position >> POSITION_BITS, position & _SEQ_MASK


def describe(url: str) -> str:
    """Where ``url`` points, for messages: ``user@host:port/dbname``, never the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "an invalid PostgreSQL URL"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    return f"{user}{host}{port}/{params.get('dbname', '')}"


def connect_kwargs(url: str) -> dict[str, Any]:
    """Connection keyword arguments: autocommit, and a connect timeout unless the URL sets one."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in conninfo_to_dict(url):
        kwargs["connect_timeout"] = CONNECT_TIMEOUT
    return kwargs


@contextlib.contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn driver errors that mean "the database is not usable" into :class:`StoreUnavailable`.

    Statement errors that reveal a bug (a syntax error, a violated constraint the adapter did not
    expect) propagate unchanged.
    """
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as error:
        raise StoreUnavailable(
            f"PostgreSQL at {where} refused the operation: {_first_line(error)}"
        ) from error
    except psycopg_pool.PoolTimeout as error:
        raise StoreUnavailable(f"PostgreSQL at {where} is unavailable: {error}") from error
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise StoreUnavailable(
            f"PostgreSQL at {where} is unavailable: {_first_line(error)}"
        ) from error
    except psycopg.errors.InvalidSchemaName as error:
        raise StoreUnavailable(
            f"PostgreSQL at {where}: {_first_line(error)} (the first schema of the search_path"
            " must exist, and the user needs USAGE and CREATE on it)"
        ) from error


async def fetch_all(
    pool: Pool,
    where: str,
    query: str | sql.Composed,
    params: Sequence[Any],
    *,
    binary: bool = False,
) -> list[TupleRow]:
    """The rows of a read-only ``query`` run on a pooled connection.

    Retried once on another connection when the first turns out to be dropped (a server
    restart closes every pooled connection; the pool only learns it on use).
    """
    with translate_errors(where):
        for attempt in (1, 2):
            async with pool.connection() as conn:
                try:
                    cursor = conn.cursor(binary=binary)
                    await cursor.execute(query, params)
                    return await cursor.fetchall()
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.broken:
                        raise
    raise AssertionError("unreachable")


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for ``parts`` (stable across processes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return redact(text.splitlines()[0])
