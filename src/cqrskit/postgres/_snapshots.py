"""The PostgreSQL snapshot store: ``cqrskit_snapshots``, on a small pool of its own."""

from __future__ import annotations

import psycopg_pool

from cqrskit.postgres._common import Pool, connect_kwargs, describe, fetch_all, translate_errors
from cqrskit.snapshots import Snapshot

_SAVE = """
INSERT INTO cqrskit_snapshots
    (stream_id, kind, state_version, state_shape, stream_version, state, taken_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (stream_id, kind, state_version) DO UPDATE SET
    state_shape = excluded.state_shape,
    stream_version = excluded.stream_version,
    state = excluded.state,
    taken_at = excluded.taken_at
WHERE excluded.stream_version > cqrskit_snapshots.stream_version
    OR excluded.state_shape <> cqrskit_snapshots.state_shape
"""
_LOAD = """
SELECT state_shape, stream_version, state, taken_at FROM cqrskit_snapshots
WHERE stream_id = %s AND kind = %s AND state_version = %s
"""


class PostgresSnapshotStore:
    """A :class:`~cqrskit.snapshots.SnapshotStore` on PostgreSQL (use
    :func:`cqrskit.postgres.open_backend`, which migrates the schema first)."""

    def __init__(self, url: str, pool: Pool) -> None:
        self._where = describe(url)
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 2) -> PostgresSnapshotStore:
        """Connect to the (migrated) database at ``url``."""
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            url, kwargs=connect_kwargs(url), min_size=1, max_size=pool_size, open=False,
            name="cqrskit-snapshots",
        )  # fmt: skip
        with translate_errors(describe(url)):
            await pool.open(wait=True)
        return cls(url, pool)

    async def save(self, snapshot: Snapshot) -> None:
        if snapshot.taken_at.tzinfo is None:
            raise ValueError("a snapshot's taken_at must be timezone-aware")
        row = (
            snapshot.stream_id,
            snapshot.kind,
            snapshot.state_version,
            snapshot.state_shape,
            snapshot.stream_version,
            snapshot.state,
            snapshot.taken_at,
        )
        with translate_errors(self._where):
            async with self._pool.connection() as conn:
                await conn.execute(_SAVE, row)

    async def load(self, stream_id: str, kind: str, state_version: int) -> Snapshot | None:
        rows = await fetch_all(
            self._pool, self._where, _LOAD, (stream_id, kind, state_version), binary=True
        )
        if not rows:
            return None
        shape, stream_version, state, taken_at = rows[0]
        return Snapshot(
            stream_id=stream_id,
            kind=kind,
            state_version=state_version,
            state_shape=shape,
            stream_version=stream_version,
            state=bytes(state),
            taken_at=taken_at,
        )

    async def close(self) -> None:
        await self._pool.close()
