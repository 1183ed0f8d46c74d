"""What the machine itself allows: single-row durable commits per second, straight through the
drivers, with the durability both libraries use. One command from one client can go no faster
than one such commit, whichever library runs it."""

from __future__ import annotations

import sqlite3
import time
from urllib.parse import urlsplit

from benchmarks.databases import Database

COMMITS = 500


def durable_commits_per_second(db: Database) -> float:
    """Commits/s of one-row transactions into ``db`` (SQLite: WAL + synchronous=FULL;
    PostgreSQL: synchronous_commit=on)."""
    payload = b"x" * 200
    if db.backend == "sqlite":
        path = urlsplit(db.url).path.replace(".db", ".raw.db")
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            start = time.perf_counter()
            for _ in range(COMMITS):
                conn.execute("BEGIN")
                conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
                conn.execute("COMMIT")
            return COMMITS / (time.perf_counter() - start)
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(db.url, autocommit=True) as pg:
        pg.execute("SET synchronous_commit = on")
        pg.execute("CREATE TABLE raw_commits (id bigserial PRIMARY KEY, v bytea)")
        start = time.perf_counter()
        for _ in range(COMMITS):
            pg.execute("INSERT INTO raw_commits (v) VALUES (%s)", (payload,))
        return COMMITS / (time.perf_counter() - start)
