"""Splitting the event log into partitions by stream id, so that several workers can share a
projection while each stream's events stay in order (all of a stream's events fall into one
partition).

The partition of a stream is ``crc32(stream_id as UTF-8) mod count``: CRC-32 (IEEE, as in zlib,
Go's ``hash/crc32`` and Java's ``java.util.zip.CRC32``) so that services in any language can
compute it the same way.

Also here, for :mod:`cqrskit.workers` and for whoever must know that workers keep a read model
(:func:`cqrskit.supervision.verify_read_model`): the groups workers meet in, and the names of
partition checkpoints.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cqrskit.readmodel import ReadStore, Table

__all__ = [
    "MAX_PARTITIONS",
    "WorkerGroup",
    "WorkerGroups",
    "partition_checkpoint",
    "partition_of",
    "stored_partition_checkpoints",
]

#: more partitions than this would only spread a projection's work ever thinner
MAX_PARTITIONS = 1024
_PARTITION_CHECKPOINT = re.compile(r"^(?P<projection>.+)\[[0-9]+/[0-9]+\]$")


def partition_of(stream_id: str, count: int) -> int:
    """The partition (``0 <= p < count``) of the events of ``stream_id``.

    Raises :class:`ValueError` when ``count`` is not between 1 and :data:`MAX_PARTITIONS`.
    """
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"partition count must be between 1 and {MAX_PARTITIONS}, got {count}")
    return zlib.crc32(stream_id.encode()) % count


class WorkerGroup(Protocol):
    """A worker's membership of a group, held while the ``join_group`` context is open."""

    @property
    def member(self) -> str:
        """This worker's id in the group (unique among the live members)."""
        ...

    async def members(self) -> list[str]:
        """The ids of the live members (this one included), sorted."""
        ...

    async def claim(self, partition: int) -> bool:
        """Take ``partition`` if no other member holds it; True if this member now holds it."""
        ...

    async def release(self, partition: int) -> None:
        """Let go of ``partition``."""
        ...


@runtime_checkable
class WorkerGroups(Protocol):
    """Where workers meet: a read store that can hold group memberships and partition claims,
    and the read model they keep together (its checkpoints listed, and reset at once)."""

    def join_group(self, group: str) -> contextlib.AbstractAsyncContextManager[WorkerGroup]:
        """Join ``group`` until the context closes (every claim is let go then, and when the
        process dies). Raises :class:`StoreUnavailable` when the store cannot be reached."""
        ...

    async def group_members(self, group: str) -> list[str]:
        """The ids of the live members of ``group``, sorted, without joining it."""
        ...

    async def stored_checkpoints(self) -> dict[str, int]:
        """Every projection checkpoint stored, by name."""
        ...

    async def reset_projections(self, projections: Sequence[str], tables: Sequence[Table]) -> None:
        """Empty ``tables`` (those that exist) and forget the checkpoint and source of every
        one of ``projections``, in one transaction. A runner of one of them that applies a
        batch meanwhile commits it before the reset (its rows are emptied with the others) or
        finds its checkpoint moved after it (:class:`~cqrskit.CheckpointMoved`, nothing
        written), never in between."""
        ...


def partition_checkpoint(projection: str, partition: int, count: int) -> str:
    """The checkpoint name of ``partition`` of ``count`` of ``projection``: ``orders[3/16]``."""
    return f"{projection}[{partition}/{count}]"


async def stored_partition_checkpoints(
    read_store: ReadStore, projections: Sequence[str]
) -> list[str]:
    """The partition checkpoints (:func:`partition_checkpoint`, of any partition count) that
    ``read_store`` holds for ``projections``, sorted: none means the projections' read model
    is not one that partitioned workers keep. A read store without worker groups
    (:class:`WorkerGroups`) holds none."""
    if not isinstance(read_store, WorkerGroups):
        return []
    wanted = set(projections)
    return sorted(
        name
        for name in await read_store.stored_checkpoints()
        if (found := _PARTITION_CHECKPOINT.match(name)) and found["projection"] in wanted
    )
