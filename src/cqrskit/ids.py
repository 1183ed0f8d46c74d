"""Time-ordered event ids (UUIDv7, RFC 9562), and UUIDs made cheaply from stored bytes.

Event ids are indexed for uniqueness; ids that grow with time land at the right edge of the
index instead of on a random page, which keeps batched appends fast on every backend.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["uuid7", "uuid_from_bytes"]

_lock = threading.Lock()
_last = 0
# Random bits drawn from the OS a few kilobytes at a time rather than 8 bytes per id (one
# system call per 512 ids); a forked child draws its own, never its parent's.
_RESERVE = 4096
_reserve = b""
_taken = 0

_new_uuid = uuid.UUID.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def _forget_reserve() -> None:
    global _reserve, _taken
    _reserve, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_reserve)


def _uuid(value: int) -> uuid.UUID:
    # uuid.UUID(int=value) without its argument checks (value is known to fit in 128 bits):
    # a UUID is made for every event appended and read, and the checks were most of its cost.
    # The slots set are those UUID.__init__ sets (and __setstate__ restores).
    made = _new_uuid(uuid.UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _UNKNOWN)
    return made


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    """The UUID stored as the 16 bytes ``raw`` (``uuid.UUID(bytes=raw)``, for bytes a store
    wrote itself: their length is not checked again)."""
    return _uuid(int.from_bytes(raw))


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits.

    Ids from one process are strictly increasing (the 12-bit ``rand_a`` field counts within a
    millisecond, as RFC 9562 section 6.2 method 1 allows).
    """
    global _last, _reserve, _taken
    with _lock:
        candidate = (time.time_ns() // 1_000_000) << 12
        _last = candidate if candidate > _last else _last + 1
        stamp = _last
        if _taken >= len(_reserve):
            _reserve, _taken = os.urandom(_RESERVE), 0
        random = _reserve[_taken : _taken + 8]
        _taken += 8
    milliseconds, counter = stamp >> 12, stamp & 0xFFF
    rand_b = int.from_bytes(random) & ((1 << 62) - 1)
    return _uuid((milliseconds << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b)
