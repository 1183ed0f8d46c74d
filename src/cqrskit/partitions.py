"""Splitting the event log into partitions by stream id, so that several workers can share a
projection while each stream's events stay in order (all of a stream's events fall into one
partition).

The partition of a stream is ``crc32(stream_id as UTF-8) mod count``: CRC-32 (IEEE, as in zlib,
Go's ``hash/crc32`` and Java's ``java.util.zip.CRC32``) so that services in any language can
compute it the same way.
"""

from __future__ import annotations

import zlib

__all__ = ["MAX_PARTITIONS", "partition_of"]

#: more partitions than this would only spread a projection's work ever thinner
MAX_PARTITIONS = 1024


def partition_of(stream_id: str, count: int) -> int:
    """The partition (``0 <= p < count``) of the events of ``stream_id``.

    Raises :class:`ValueError` when ``count`` is not between 1 and :data:`MAX_PARTITIONS`.
    """
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"partition count must be between 1 and {MAX_PARTITIONS}, got {count}")
    return zlib.crc32(stream_id.encode()) % count
