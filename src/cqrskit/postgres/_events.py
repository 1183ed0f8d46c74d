"""The PostgreSQL event store: gap-safe global order, group commit, LISTEN/NOTIFY wake-ups.

Every event row records the id of the transaction that wrote it (``xid8``) and its place in
that transaction; the global order is (transaction id, place). A reader returns only rows of
transactions older than the oldest transaction still running in the cluster
(``pg_snapshot_xmin(pg_current_snapshot())``): every such transaction has ended, and every
transaction that starts later gets a larger id, so nothing can ever be inserted before what a
reader has seen. See ``docs/postgres-ordering.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import psycopg_pool

from cqrskit.errors import ConcurrencyError, DuplicateIdempotencyKey
from cqrskit.messages import NewEvent, RecordedEvent
from cqrskit.postgres._appends import GroupCommit
from cqrskit.postgres._common import (
    CHANNEL,
    POSITION_BITS,
    Pool,
    connect_kwargs,
    decode_position,
    describe,
    fetch_all,
    pool_options,
    translate_errors,
)
from cqrskit.store import AppendResult, IdempotencyRecord, IdempotentResult, follow

log = logging.getLogger("cqrskit.postgres")

# The text of the transaction id is selected under another name: ORDER BY transaction_id would
# otherwise sort by that text ('1000' < '999') rather than by the xid8 column.
_COLUMNS = (
    "transaction_id::text AS xid, seq, stream_id, stream_version, event_id, event_type,"
    " schema_version, data, metadata, recorded_at"
)
# Only transactions below the snapshot's xmin have certainly ended (committed or rolled back).
_HORIZON = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
READ_ALL_SQL = f"""
SELECT {_COLUMNS} FROM cqrskit_events
WHERE (transaction_id, seq) > (%s::text::xid8, %s) AND {_HORIZON}
ORDER BY transaction_id, seq LIMIT %s
"""
_READ_STREAM_SQL = f"""
SELECT {_COLUMNS} FROM cqrskit_events
WHERE stream_id = %s AND stream_version >= %s ORDER BY stream_version LIMIT %s
"""
_HEAD_SQL = f"""
SELECT transaction_id::text AS xid, seq FROM cqrskit_events WHERE {_HORIZON}
ORDER BY transaction_id DESC, seq DESC LIMIT 1
"""
_WRITTEN_SQL = """
SELECT transaction_id::text AS xid, seq FROM cqrskit_events
ORDER BY transaction_id DESC, seq DESC LIMIT 1
"""
_VERSION_SQL = "SELECT coalesce(max(stream_version), 0) FROM cqrskit_events WHERE stream_id = %s"
_IDEMPOTENCY_SQL = """
SELECT key, fingerprint, stream_id, version, position FROM cqrskit_idempotency WHERE key = %s
"""


async def _in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    # Timestamps come back in the session's time zone (PGTZ, the server's default): UTC, as
    # on every other backend.
    await conn.execute("SET TIME ZONE 'UTC'")


def _recorded(row: Sequence[Any]) -> RecordedEvent:
    transaction_id, seq, stream_id, version, event_id, event_type, schema, data, meta, at = row
    return RecordedEvent(
        event_id=event_id,
        stream_id=stream_id,
        stream_version=version,
        position=(int(transaction_id) << POSITION_BITS) | seq,
        recorded_at=at,
        event_type=event_type,
        schema_version=schema,
        data=data,
        metadata=meta,
    )


class PostgresEventStore:
    """An :class:`~cqrskit.EventStore` on PostgreSQL 13 or later (use :func:`open_backend`).

    Appends from concurrent coroutines are group-committed; ``read_all`` and subscriptions see
    an event once its transaction and every older transaction in the cluster have ended, so a
    long-running transaction anywhere delays them (but never makes them skip an event).
    """

    def __init__(
        self,
        url: str,
        pool: Pool,
        *,
        lanes: int = 1,
        poll_interval: float = 0.2,
        visibility_timeout: float = 1.0,
    ) -> None:
        self._url = url
        self._where = describe(url)
        self._pool = pool
        self._appends = GroupCommit(
            pool, self._where, lanes=lanes, visibility_timeout=visibility_timeout
        )
        self._notifier = _Notifier(url, self._where)
        self._poll_interval = poll_interval
        self._store_id: str | None = None

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, lanes: int = 1, visibility_timeout: float = 1.0
    ) -> PostgresEventStore:
        """Connect to the (migrated) database at ``url``.

        ``lanes``: how many group-commit transactions may be in flight at once.
        ``visibility_timeout``: the longest an append waits, after its commit, for older
        transactions in the cluster to end so that readers see its events (0: do not wait;
        then ``read_all`` right after ``append`` may not show the append yet).
        """
        where = describe(url)
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, lanes + 1),
            configure=_in_utc,
            name="cqrskit-events",
            **pool_options(url),
        )
        with translate_errors(where):
            await pool.open(wait=True)
        return cls(url, pool, lanes=lanes, visibility_timeout=visibility_timeout)

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        *,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        if not events:
            return await self._append_nothing(stream_id, expected_version, idempotency)
        return await self._appends.append(stream_id, events, expected_version, idempotency)

    async def _append_nothing(
        self, stream_id: str, expected_version: int | None, idempotency: IdempotencyRecord | None
    ) -> AppendResult:
        version = await self.stream_version(stream_id)
        if expected_version is not None and expected_version != version:
            raise ConcurrencyError(stream_id, expected_version, version)
        if idempotency is not None and await self.find_idempotent_result(idempotency.key):
            raise DuplicateIdempotencyKey(idempotency.key)
        # the newest committed position, not the visible head: a token of this append must
        # cover the stream's events, also those readers cannot see yet
        return AppendResult(
            stream_id=stream_id, version=version, position=await self.written_position()
        )

    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        rows = await self._fetch(_READ_STREAM_SQL, (stream_id, from_version, limit))
        return [_recorded(row) for row in rows]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        transaction_id, seq = decode_position(max(after, 0))
        rows = await self._fetch(READ_ALL_SQL, (str(transaction_id), seq, limit))
        return [_recorded(row) for row in rows]

    def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        notifier = self._notifier
        seen = -1  # the notifier's count when this subscription last read

        async def read(position: int, limit: int) -> list[RecordedEvent]:
            nonlocal seen
            notifier.start()
            seen = notifier.count
            return await self.read_all(position, limit)

        async def wait_for_append(position: int) -> None:
            # Woken by a notification, or after poll_interval anyway: a notification can be
            # lost (listener reconnecting), and the end of a long transaction that wrote no
            # events (which can make older events visible) notifies nobody.
            await notifier.wait(seen, self._poll_interval)

        return follow(read, wait_for_append, after, batch_size)

    async def stream_version(self, stream_id: str) -> int:
        rows = await self._fetch(_VERSION_SQL, (stream_id,))
        version: int = rows[0][0]
        return version

    async def head_position(self) -> int:
        return await self._newest(_HEAD_SQL)

    async def written_position(self) -> int:
        return await self._newest(_WRITTEN_SQL)

    async def _newest(self, query: str) -> int:
        rows = await self._fetch(query, ())
        if not rows:
            return 0
        transaction_id, seq = rows[0]
        return (int(transaction_id) << POSITION_BITS) | int(seq)

    async def find_idempotent_result(self, key: str) -> IdempotentResult | None:
        rows = await self._fetch(_IDEMPOTENCY_SQL, (key,))
        if not rows:
            return None
        key, fingerprint, stream_id, version, position = rows[0]
        return IdempotentResult(
            key=key,
            fingerprint=fingerprint,
            stream_id=stream_id,
            version=version,
            position=int(position),
        )

    async def store_id(self) -> str:
        if self._store_id is None:
            rows = await self._fetch("SELECT store_id::text FROM cqrskit_identity", ())
            self._store_id = str(rows[0][0])
        return self._store_id

    async def close(self) -> None:
        await self._appends.close()
        await self._notifier.close()
        await self._pool.close()

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await fetch_all(self._pool, self._where, query, params, binary=True)


class _Notifier:
    """Counts NOTIFYs on the events channel, on a dedicated connection, and wakes waiters."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self.count = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="cqrskit-postgres-listen")

    async def wait(self, seen: int, timeout: float) -> None:
        """Return when the count moves past ``seen``, or after ``timeout`` seconds."""
        if self.count != seen:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def _bump(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _listen(self) -> None:
        pause = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, **connect_kwargs(self._url))
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    pause = 0.1
                    self._bump()  # anything committed before LISTEN took effect: read again
                    async for _ in conn.notifies():
                        self._bump()
            except psycopg.Error as error:
                log.warning(
                    "listening on %s failed (%s); polling until it is back", self._where, error
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
