"""What the PostgreSQL store modules share: positions, connection settings, error translation."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from cqrskit.errors import StoreUnavailable, TableMissing
from cqrskit.urls import redact

Connection = psycopg.AsyncConnection[TupleRow]
Pool = psycopg_pool.AsyncConnectionPool[Connection]

#: Bits of a global position that hold an event's place within its transaction.
POSITION_BITS = 20
#: The most events one transaction may append (one append, or one group-commit batch).
MAX_EVENTS_PER_TRANSACTION = 1 << POSITION_BITS
_SEQ_MASK = MAX_EVENTS_PER_TRANSACTION - 1
#: Seconds to wait for a new connection before reporting the server unreachable (libpq's
#: smallest). Short, so that a request during an outage is answered 503 within about 2 s.
CONNECT_TIMEOUT = 2
#: Seconds a caller waits for a pooled connection (all busy, or none since the server went away).
POOL_TIMEOUT = 2.0
#: Seconds a pool keeps retrying (1 s, 2 s, ... apart) to replace a lost connection before it
#: gives up; the next caller that waits makes it try again at once. Short, so that after an
#: outage the pool reconnects within seconds of the server's return, however long it was gone.
RECONNECT_TIMEOUT = 5.0


def pool_options(url: str) -> dict[str, Any]:
    """The keyword arguments every pool of this adapter is made with."""
    return {
        "kwargs": connect_kwargs(url),
        "timeout": POOL_TIMEOUT,
        "reconnect_timeout": RECONNECT_TIMEOUT,
        "open": False,
    }


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
def translate_errors(where: str, *, read_model: bool = False) -> Iterator[None]:
    """Turn driver errors that mean "the database is not usable" into :class:`StoreUnavailable`
    (and, for ``read_model`` tables, a missing table into :class:`TableMissing`).

    Statement errors that reveal a bug (a syntax error, a violated constraint the adapter did not
    expect) propagate unchanged.
    """
    try:
        yield
    except psycopg.errors.UndefinedTable as error:
        if not read_model:
            raise
        raise TableMissing(_missing_relation(error)) from error
    except psycopg.errors.InsufficientPrivilege as error:
        raise StoreUnavailable(
            f"PostgreSQL at {where} refused the operation: {_first_line(error)}"
        ) from error
    except psycopg_pool.PoolTimeout as error:
        raise StoreUnavailable(
            f"PostgreSQL at {where} is unavailable: no connection within {POOL_TIMEOUT:g} s"
        ) from error
    except psycopg_pool.PoolClosed as error:  # the store is closing (the process is stopping)
        raise StoreUnavailable(f"the store for PostgreSQL at {where} is closed") from error
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
    read_model: bool = False,
) -> list[TupleRow]:
    """The rows of a read-only ``query`` run on a pooled connection.

    Retried once when the connection turns out to be dropped (a server restart closes every
    pooled connection; the pool only learns it on use): the pool's other idle connections are
    checked first, so the retry gets a live one.
    """
    with translate_errors(where, read_model=read_model):
        try:
            return await _fetch_all(pool, query, params, binary)
        except _Dropped:
            await pool.check()
        try:
            return await _fetch_all(pool, query, params, binary)
        except _Dropped as dropped:
            raise dropped.error from None


class _Dropped(Exception):
    """A statement failed because its connection was dropped (``error`` says how)."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


async def _fetch_all(
    pool: Pool, query: str | sql.Composed, params: Sequence[Any], binary: bool
) -> list[TupleRow]:
    async with pool.connection() as conn:
        try:
            cursor = conn.cursor(binary=binary)
            await cursor.execute(query, params)
            return await cursor.fetchall()
        except psycopg.OperationalError as error:
            if conn.broken:
                raise _Dropped(error) from error
            raise


def ids_behind_message(where: str, newest: int | None = None, next_id: int | None = None) -> str:
    """What to tell a user whose events were written by transaction ids this cluster has not
    reached yet (the database was restored from a dump of another cluster)."""
    figures = (
        f" (the newest event's transaction id is {newest}, this cluster's next is {next_id})"
        if newest is not None and next_id is not None
        else ""
    )
    return (
        f"the event store at {where} holds events written by transaction ids this PostgreSQL"
        f" cluster has not reached yet{figures}: it was restored from a dump of another"
        " cluster. Until the cluster's transaction ids pass them, old events stay hidden and"
        " appends to old streams fail. Advance them with `orders db advance-transaction-ids`"
        " (cqrskit.postgres.advance_transaction_ids), or stop the server and set its next"
        " transaction id with pg_resetwal"
    )


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for ``parts`` (stable across processes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _missing_relation(error: psycopg.errors.UndefinedTable) -> str:
    # The server names the relation only in its message: 'relation "name" does not exist'.
    found = re.search(r'relation "(.+?)" does not exist', str(error))
    return found.group(1) if found else _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return redact(text.splitlines()[0])
