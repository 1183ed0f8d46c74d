"""Time-ordered event ids (UUIDv7, RFC 9562).

Event ids are indexed for uniqueness; ids that grow with time land at the right edge of the
index instead of on a random page, which keeps batched appends fast on every backend.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["uuid7"]

_lock = threading.Lock()
_last = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits.

    Ids from one process are strictly increasing (the 12-bit ``rand_a`` field counts within a
    millisecond, as RFC 9562 section 6.2 method 1 allows).
    """
    global _last
    with _lock:
        candidate = (time.time_ns() // 1_000_000) << 12
        _last = candidate if candidate > _last else _last + 1
        stamp = _last
    milliseconds, counter = stamp >> 12, stamp & 0xFFF
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (milliseconds << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)
