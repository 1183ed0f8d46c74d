"""What tests of the SQLite adapter look at inside it: the writer thread and its queue.

Tests that need appends to meet in one group commit park the writer on a first append (another
connection holds the write lock), queue the others, then release the lock.
"""

from __future__ import annotations

import sys

from cqrskit.sqlite import SqliteEventStore


def writer_is_committing(store: SqliteEventStore) -> bool:
    """Whether the store's writer thread has taken a group and is inside its transaction."""
    thread = store._appends._thread
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:  # (a name that contains it: mutation testing renames functions)
        if "_write_group" in frame.f_code.co_name:
            return True
        frame = frame.f_back
    return False


def queued(store: SqliteEventStore) -> int:
    """How many appends wait for the writer thread to take them."""
    return store._appends._queue.qsize()
