"""Appends on PostgreSQL: one statement per append, and group commit across coroutines.

Each append is one statement (:data:`APPEND_SQL`) that checks the stream's version, stores the
idempotency key and inserts every event of the append, so an append is atomic on its own and
costs one round trip. Appends submitted by concurrent coroutines are queued and committed
together: a batch is one transaction in which each append's statement runs in turn (sent in
one pipeline), so N commands cost one round trip and one durable commit instead of N.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool

from cqrskit.errors import ConcurrencyError, CqrsKitError, DuplicateIdempotencyKey, StoreUnavailable
from cqrskit.messages import NewEvent
from cqrskit.postgres._common import (
    CHANNEL,
    MAX_EVENTS_PER_TRANSACTION,
    POSITION_BITS,
    Connection,
    Pool,
    encode_position,
    ids_behind_message,
    translate_errors,
)
from cqrskit.postgres._horizon import HORIZON_SQL, Horizon, current_horizon
from cqrskit.store import AppendResult, IdempotencyRecord

# A version mismatch or a known idempotency key make the statement insert nothing (and say so
# in its result) rather than fail, so that one refused append does not abort the others of its
# batch. The one failure left is a concurrent writer in another transaction taking the same
# stream version first: the UNIQUE (stream_id, stream_version) constraint then raises.
# Data flows between the CTEs through RETURNING: the events are inserted only if the key was.
#
# ``in_order``: a stream's events must follow each other in the global order, so the stream's
# last event must come from this transaction or an older one. A lone statement always passes
# (its transaction id is assigned after its snapshot, so it is younger than every transaction
# whose rows it sees), but a later statement of a group-commit batch may see a row committed by
# a younger transaction; it then inserts nothing and the append is retried in a fresh one.
_APPEND_TEMPLATE = f"""
WITH last AS (
    SELECT stream_version, transaction_id FROM cqrskit_events
    WHERE stream_id = %(stream_id)s ORDER BY stream_version DESC LIMIT 1
), current AS (
    SELECT coalesce((SELECT stream_version FROM last), 0) AS version,
           coalesce((SELECT transaction_id <= pg_current_xact_id() FROM last), true) AS in_order
), checked AS (
    SELECT version FROM current
    WHERE in_order AND (%(expected)s::bigint IS NULL OR version = %(expected)s::bigint)
), stored_key AS (
    INSERT INTO cqrskit_idempotency (key, fingerprint, stream_id, version, position)
    SELECT %(key)s, %(fingerprint)s, %(stream_id)s, version + %(count)s,
           pg_current_xact_id()::text::numeric * {MAX_EVENTS_PER_TRANSACTION} + %(last_seq)s
    FROM checked WHERE %(key)s::text IS NOT NULL
    ON CONFLICT (key) DO NOTHING
    RETURNING 1
), appended AS (
    INSERT INTO cqrskit_events (seq, stream_id, stream_version, event_id, event_type,
                                schema_version, data, metadata, recorded_at)
    SELECT %(first_seq)s + e.n - 1, %(stream_id)s, checked.version + e.n, e.event_id,
           e.event_type, e.schema_version, e.data, e.metadata, e.recorded_at
    FROM checked, {{events}} AS e(event_id, event_type, schema_version, data, metadata,
                                  recorded_at, n)
    WHERE %(key)s::text IS NULL OR EXISTS (SELECT FROM stored_key)
    RETURNING transaction_id
)
SELECT (SELECT version FROM current),
       (SELECT in_order FROM current),
       (SELECT count(*) FROM stored_key),
       (SELECT transaction_id::text FROM appended LIMIT 1),
       (SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', '') FROM appended LIMIT 1) AS n),
       pg_snapshot_xmin(pg_current_snapshot())::text
"""
#: The statement that appends one or more events to one stream (see :func:`append_params`).
APPEND_SQL = _APPEND_TEMPLATE.format(
    events="""unnest(%(event_ids)b::uuid[], %(event_types)b::text[], %(schema_versions)b::int[],
                %(data)b::bytea[], %(metadata)b::bytea[], %(recorded_at)b::timestamptz[])
           WITH ORDINALITY"""
)
# The same for exactly one event (most commands): scalar parameters cost far less to send.
_APPEND_ONE_SQL = _APPEND_TEMPLATE.format(
    events="""(VALUES (%(event_id)s::uuid, %(event_type)s::text, %(schema_version)s::int,
                   %(data)b::bytea, %(metadata)b::bytea, %(recorded_at)s::timestamptz, 1))"""
)

_STREAM_VERSION_KEY = "cqrskit_events_stream_version_key"
_ANY_VERSION_ATTEMPTS = 10


def append_params(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int | None,
    idempotency: IdempotencyRecord | None,
    first_seq: int = 0,
) -> dict[str, Any]:
    """The parameters of :data:`APPEND_SQL` for one append whose first event gets ``first_seq``
    (its place among the events its transaction writes)."""
    params = _common_params(stream_id, len(events), expected_version, idempotency, first_seq)
    params["event_ids"] = [event.event_id for event in events]
    params["event_types"] = [event.event_type for event in events]
    params["schema_versions"] = [event.schema_version for event in events]
    params["data"] = [event.data for event in events]
    params["metadata"] = [event.metadata for event in events]
    params["recorded_at"] = [event.recorded_at for event in events]
    return params


def _statement(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int | None,
    idempotency: IdempotencyRecord | None,
    first_seq: int,
) -> tuple[str, dict[str, Any]]:
    if len(events) != 1:
        return APPEND_SQL, append_params(
            stream_id, events, expected_version, idempotency, first_seq
        )
    event = events[0]
    params = _common_params(stream_id, 1, expected_version, idempotency, first_seq)
    params["event_id"] = event.event_id
    params["event_type"] = event.event_type
    params["schema_version"] = event.schema_version
    params["data"] = event.data
    params["metadata"] = event.metadata
    params["recorded_at"] = event.recorded_at
    return _APPEND_ONE_SQL, params


def _common_params(
    stream_id: str,
    count: int,
    expected_version: int | None,
    idempotency: IdempotencyRecord | None,
    first_seq: int,
) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "expected": expected_version,
        "key": idempotency.key if idempotency else None,
        "fingerprint": idempotency.fingerprint if idempotency else None,
        "count": count,
        "first_seq": first_seq,
        "last_seq": first_seq + count - 1,
    }


@dataclass(eq=False)
class _Pending:
    stream_id: str
    events: Sequence[NewEvent]
    expected: int | None
    idempotency: IdempotencyRecord | None
    future: asyncio.Future[AppendResult]
    first_seq: int = 0

    def statement(self, first_seq: int) -> tuple[str, dict[str, Any]]:
        self.first_seq = first_seq
        return _statement(self.stream_id, self.events, self.expected, self.idempotency, first_seq)

    def settle(self, outcome: AppendResult | BaseException) -> None:
        if self.future.done():  # the caller was cancelled; the append stands or not, as committed
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class _OutOfOrder(Exception):
    """The stream's last event came from a younger transaction: append in a fresh one."""


def _outcome(pending: _Pending, row: Sequence[Any]) -> AppendResult | CqrsKitError | _OutOfOrder:
    version, in_order, keys_stored, transaction_id = row[0], row[1], row[2], row[3]
    if pending.expected is not None and version != pending.expected:
        return ConcurrencyError(pending.stream_id, pending.expected, version)
    if not in_order:
        return _OutOfOrder()
    if pending.idempotency is not None and keys_stored == 0:
        return DuplicateIdempotencyKey(pending.idempotency.key)
    assert transaction_id is not None, "the checks passed and the key was new: rows inserted"
    last_seq = pending.first_seq + len(pending.events) - 1
    return AppendResult(
        stream_id=pending.stream_id,
        version=version + len(pending.events),
        position=encode_position(int(transaction_id), last_seq),
    )


class _NoConnection(Exception):
    """An append found no connection for a whole pool timeout; ``error`` says so."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _no_connection(error: BaseException) -> bool:
    """Whether ``error`` says that no connection came for a whole pool timeout (the server is
    down, or every connection stayed busy)."""
    return isinstance(error, StoreUnavailable) and isinstance(
        error.__cause__, psycopg_pool.PoolTimeout
    )


def _refuse_queued(lane: _Lane, error: Exception) -> None:
    """Settle every append queued in ``lane`` with ``error``: queued while an append waited a
    whole pool timeout in vain, each would wait as long again (during an outage the n-th would
    be answered after n timeouts); they get the same answer at once."""
    while lane.queue:
        lane.queue.popleft().settle(error)


@dataclass(eq=False)
class _Lane:
    queue: collections.deque[_Pending] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    closing: bool = False


class GroupCommit:
    """Commits the appends of many coroutines in shared transactions, each with its own checks.

    Appends are routed to one of ``lanes`` queues by stream id, so appends to one stream always
    share a lane (and never race each other inside this process); each lane commits one batch
    at a time on one connection while the next batch gathers.
    """

    def __init__(
        self,
        pool: Pool,
        where: str,
        *,
        lanes: int = 1,
        max_batch_events: int = 10_000,
        visibility_timeout: float = 1.0,
    ) -> None:
        self._pool = pool
        self._where = where
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        self._max_batch_events = min(max_batch_events, MAX_EVENTS_PER_TRANSACTION)
        self._horizon = Horizon(pool, visibility_timeout)
        self._closed = False

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None,
        idempotency: IdempotencyRecord | None,
    ) -> AppendResult:
        """Queue one append and wait for its outcome (an :class:`AppendResult` or an error)."""
        if len(events) > MAX_EVENTS_PER_TRANSACTION:
            raise ValueError(f"an append holds at most {MAX_EVENTS_PER_TRANSACTION} events")
        if self._closed:
            raise StoreUnavailable(f"the event store for {self._where} is closed")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        lane = self._lanes[hash(stream_id) % len(self._lanes)]
        lane.queue.append(_Pending(stream_id, events, expected_version, idempotency, future))
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._run(lane), name="cqrskit-postgres-append")
        lane.wake.set()
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closed = True
        for lane in self._lanes:
            lane.closing = True
            lane.wake.set()
        for lane in self._lanes:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
        await self._horizon.close()

    async def _run(self, lane: _Lane) -> None:
        while True:
            if not lane.queue:
                if lane.closing:
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            batch = self._take(lane.queue)
            try:
                await self._commit(batch)
            except _NoConnection as refused:  # the batch's appends are settled
                _refuse_queued(lane, refused.error)
                await self._pool.check()
            except Exception as error:
                for pending in batch:
                    pending.settle(error)
                if _no_connection(error):
                    _refuse_queued(lane, error)
                if isinstance(error, StoreUnavailable):
                    # The server may have restarted: drop the pool's other dead connections
                    # now rather than fail one more append on each of them.
                    await self._pool.check()
            except BaseException:
                interrupted = StoreUnavailable(
                    f"an append to {self._where} was interrupted: it may or may not be committed"
                )
                for pending in batch:
                    pending.settle(interrupted)
                raise

    def _take(self, queue: collections.deque[_Pending]) -> list[_Pending]:
        batch = [queue.popleft()]
        events = len(batch[0].events)
        while queue and events + len(queue[0].events) <= self._max_batch_events:
            events += len(queue[0].events)
            batch.append(queue.popleft())
        # Every process locks streams in the same order (two batches writing the same streams
        # in opposite orders would deadlock); a stable sort keeps one stream's appends in order.
        batch.sort(key=lambda pending: pending.stream_id)
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        with translate_errors(self._where):
            committed = await self._commit_together(batch) if len(batch) > 1 else None
        retry = batch  # a lone append, or a batch that failed and was rolled back
        if committed is not None:
            rows, horizon = committed
            retry = []
            for pending, row in zip(batch, rows, strict=True):
                outcome = _outcome(pending, row)
                if isinstance(outcome, _OutOfOrder):
                    retry.append(pending)
                else:
                    self._acknowledge(pending, outcome, horizon)
        for n, pending in enumerate(retry):
            try:
                with translate_errors(self._where):
                    outcome, horizon = await self._commit_alone(pending)
            except Exception as error:
                pending.settle(error)
                if _no_connection(error):  # the others would wait as long again: no
                    for later in retry[n + 1 :]:
                        later.settle(error)
                    raise _NoConnection(error) from error
            else:
                self._acknowledge(pending, outcome, horizon)

    def _acknowledge(
        self, pending: _Pending, outcome: AppendResult | CqrsKitError, horizon: int
    ) -> None:
        """Settle ``pending`` once readers can see its events (``horizon``: known so far)."""
        if isinstance(outcome, AppendResult):
            transaction_id = outcome.position >> POSITION_BITS
            if transaction_id >= horizon:
                self._horizon.when_visible(transaction_id, lambda: pending.settle(outcome))
                return
        pending.settle(outcome)

    async def _commit_together(
        self, batch: list[_Pending]
    ) -> tuple[list[Sequence[Any]], int] | None:
        """Commit ``batch`` in one transaction: its rows and the horizon just after the commit;
        None if a statement failed (then nothing was written)."""
        statements, seq = [], 0
        for pending in batch:
            statements.append(pending.statement(seq))
            seq += len(pending.events)
        async with self._pool.connection() as conn:
            try:
                async with conn.pipeline():  # every statement in one round trip, then
                    async with conn.transaction():  # COMMIT and the horizon in another
                        rows = await _execute_in_order(conn, statements)
                    after = await conn.execute(HORIZON_SQL)
                horizon = await after.fetchone()
            except psycopg.Error:
                if conn.broken:  # the commit may or may not have happened: do not retry
                    raise
                return None  # e.g. a race with another process: retried one by one
        assert horizon is not None
        return rows, int(horizon[0])

    async def _commit_alone(self, pending: _Pending) -> tuple[AppendResult | CqrsKitError, int]:
        """Commit one append in its own transaction (one autocommit statement); return its
        outcome and the horizon known after the commit."""
        query, params = pending.statement(0)
        async with self._pool.connection() as conn:
            for _ in range(_ANY_VERSION_ATTEMPTS):
                try:
                    cursor = await conn.execute(query, params)
                except psycopg.errors.UniqueViolation as error:
                    if error.diag.constraint_name != _STREAM_VERSION_KEY:
                        raise
                    if pending.expected is not None:
                        version = await _stream_version(conn, pending.stream_id)
                        return ConcurrencyError(pending.stream_id, pending.expected, version), 0
                    continue  # no version expected: take the next free version
                row = await cursor.fetchone()
                assert row is not None
                outcome = _outcome(pending, row)
                if isinstance(outcome, _OutOfOrder):
                    # A lone statement's transaction is younger than every row it can see,
                    # unless the rows came from another cluster (pg_dump) whose transaction
                    # ids are ahead of this one's.
                    raise StoreUnavailable(ids_behind_message(self._where))
                transaction_id, before = row[3], int(row[5])
                if transaction_id is not None and int(transaction_id) == before:
                    # Nothing older was running or starting when the statement began: its
                    # events are visible as soon as it commits (the common case).
                    return outcome, before + 1
                return outcome, await current_horizon(conn)
            version = await _stream_version(conn, pending.stream_id)
        return ConcurrencyError(pending.stream_id, None, version), 0


async def _execute_in_order(
    conn: Connection, statements: list[tuple[str, dict[str, Any]]]
) -> list[Sequence[Any]]:
    """Run ``statements`` in order; return each one's row. Runs of statements with the same SQL
    go through one ``executemany`` (half the client-side cost of one ``execute`` each)."""
    cursors = []
    for query, run in itertools.groupby(statements, key=lambda statement: statement[0]):
        cursor = conn.cursor()
        await cursor.executemany(query, [params for _, params in run], returning=True)
        cursors.append(cursor)
    rows: list[Sequence[Any]] = []
    for cursor in cursors:
        while True:
            row = await cursor.fetchone()
            assert row is not None
            rows.append(row)
            if not cursor.nextset():
                break
    return rows


async def _stream_version(conn: Connection, stream_id: str) -> int:
    cursor = await conn.execute(
        "SELECT coalesce(max(stream_version), 0) FROM cqrskit_events WHERE stream_id = %s",
        (stream_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
