"""The SQLite read store: read-model tables and projection checkpoints in one SQLite file.

Part of the SQLite backend (see :mod:`cqrskit.sqlite`, which opens it next to the event store).
Column values are stored so that SQL compares and sorts them as Python does: JSON as compact
text, TIMESTAMP as fixed-width ISO-8601 text in UTC (``2024-05-01T12:00:00.000000+00:00``),
read back as an aware ``datetime``.
"""

from __future__ import annotations

import asyncio
import operator
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from cqrskit.errors import CheckpointMoved
from cqrskit.readmodel import ColumnType, Key, Row, Table, UnitOfWork, ViewTransaction
from cqrskit.sqlite._common import ReadConnections, rollback, translated
from cqrskit.sqlite._schema import READ_MODEL, OpenedFile, open_file

_GET_CHECKPOINT = "SELECT position FROM cqrskit_checkpoints WHERE projection = ?"
_SET_CHECKPOINT = (
    "INSERT INTO cqrskit_checkpoints (projection, position) VALUES (?, ?) "
    "ON CONFLICT (projection) DO UPDATE SET position = excluded.position"
)
_GET_SOURCE = "SELECT store_id FROM cqrskit_sources WHERE projection = ?"
_SET_SOURCE = (
    "INSERT INTO cqrskit_sources (projection, store_id) VALUES (?, ?) "
    "ON CONFLICT (projection) DO UPDATE SET store_id = excluded.store_id"
)
_FORGET_SOURCE = "DELETE FROM cqrskit_sources WHERE projection = ?"
_FORGET_CHECKPOINT = "DELETE FROM cqrskit_checkpoints WHERE projection = ?"
_SQL_TYPES = {
    ColumnType.TEXT: "TEXT",
    ColumnType.INTEGER: "INTEGER",
    ColumnType.JSON: "TEXT",
    ColumnType.TIMESTAMP: "TEXT",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.decode

Converter = Callable[[Any], Any]


def _quote(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid table or column name")
    return f'"{name}"'


def _encode_json(value: Any) -> str:
    return _json_encode(value).decode()


def _encode_timestamp(value: datetime) -> str:
    if value.tzinfo is not UTC:  # recorded_at is in UTC already: no conversion
        if value.tzinfo is None:
            raise ValueError(f"TIMESTAMP values must be timezone-aware, got {value!r}")
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


_ENCODERS: dict[ColumnType, Converter | None] = {
    ColumnType.TEXT: None,
    ColumnType.INTEGER: None,
    ColumnType.JSON: _encode_json,
    ColumnType.TIMESTAMP: _encode_timestamp,
}
_DECODERS: dict[ColumnType, Converter | None] = {
    ColumnType.TEXT: None,
    ColumnType.INTEGER: None,
    ColumnType.JSON: _json_decode,
    ColumnType.TIMESTAMP: datetime.fromisoformat,
}


class _TableSql:
    """The SQL statements and value conversions of one read-model table, built once."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.names = table.column_names
        types = {column.name: column.type for column in table.columns}
        self.encoders = {name: _ENCODERS[types[name]] for name in self.names}
        # A row's values in column order by one C call, then the few columns that need
        # converting (JSON, TIMESTAMP) by position.
        self._values = operator.itemgetter(*self.names)
        self._converted = [
            (index, encode)
            for index, encode in enumerate(self.encoders[name] for name in self.names)
            if encode is not None
        ]
        self._key_encoders = [self.encoders[name] for name in table.key]
        self._decoders = [(name, _DECODERS[types[name]]) for name in self.names]
        self._plain = all(decode is None for _, decode in self._decoders)
        name = _quote(table.name)
        columns = ", ".join(_quote(column) for column in self.names)
        key_match = " AND ".join(f"{_quote(column)} = ?" for column in table.key)
        self.select = f"SELECT {columns} FROM {name}"
        self.get = f"{self.select} WHERE {key_match}"
        self.delete = f"DELETE FROM {name} WHERE {key_match}"
        updates = ", ".join(
            f"{_quote(c)} = excluded.{_quote(c)}" for c in self.names if c not in table.key
        )
        conflict = ", ".join(_quote(column) for column in table.key)
        placeholders = ", ".join("?" for _ in self.names)
        self.upsert = (
            f"INSERT INTO {name} ({columns}) VALUES ({placeholders}) ON CONFLICT ({conflict}) "
            + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")
        )
        self.create = self._create_statements(table, types)
        self.finds: dict[tuple[Any, ...], str] = {}

    @staticmethod
    def _create_statements(table: Table, types: Mapping[str, ColumnType]) -> list[str]:
        definitions = [
            f"{_quote(c.name)} {_SQL_TYPES[types[c.name]]}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
        ]
        definitions.append(f"PRIMARY KEY ({', '.join(_quote(c) for c in table.key)})")
        statements = [f"CREATE TABLE IF NOT EXISTS {_quote(table.name)} ({', '.join(definitions)})"]
        for columns in table.indexes:
            index = _quote(f"ix_{table.name}_{'_'.join(columns)}")
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {index} ON {_quote(table.name)} "
                f"({', '.join(_quote(c) for c in columns)})"
            )
        return statements

    def encode(self, name: str, value: Any) -> Any:
        encode = self.encoders.get(name)
        if encode is None:
            if name not in self.encoders:
                raise ValueError(f"table {self.table.name!r} has no column {name!r}")
            return value
        return None if value is None else encode(value)

    def encode_row(self, row: Row) -> Sequence[Any]:
        values = self._values(row)
        if len(self.names) == 1:
            return (values,)
        if not self._converted:
            return values  # type: ignore[no-any-return]
        converted = list(values)
        for index, encode in self._converted:
            value = converted[index]
            if value is not None:
                converted[index] = encode(value)
        return converted

    def encode_key(self, key: Key) -> tuple[Any, ...]:
        if len(key) != len(self._key_encoders):
            raise ValueError(f"table {self.table.name!r} has a key of {len(self.table.key)} parts")
        return tuple(
            value if encode is None or value is None else encode(value)
            for value, encode in zip(key, self._key_encoders, strict=True)
        )

    def decode(self, values: Sequence[Any]) -> Row:
        if self._plain:
            return dict(zip(self.names, values, strict=True))
        return {
            name: value if decode is None or value is None else decode(value)
            for (name, decode), value in zip(self._decoders, values, strict=True)
        }

    def find(
        self,
        where: Mapping[str, Any],
        order_by: Sequence[str],
        after: bool,
        limit: bool,
        descending: bool = False,
    ) -> str:
        """The SQL of a :meth:`SqliteReadStore.find` call of this shape (cached)."""
        nulls = tuple(value is None for value in where.values())
        shape = (tuple(where), nulls, tuple(order_by), after, limit, descending)
        sql = self.finds.get(shape)
        if sql is None:
            sql = self.finds[shape] = self._find_sql(shape)
        return sql

    def _find_sql(self, shape: tuple[Any, ...]) -> str:
        where, nulls, order_by, after, limit, descending = shape
        for name in (*where, *order_by):
            if name not in self.encoders:
                raise ValueError(f"table {self.table.name!r} has no column {name!r}")
        conditions = [
            f"{_quote(name)} IS NULL" if null else f"{_quote(name)} = ?"
            for name, null in zip(where, nulls, strict=True)
        ]
        ordering = ", ".join(_quote(name) for name in order_by)
        if after and order_by:
            marks = ", ".join("?" for _ in order_by)
            conditions.append(f"({ordering}) {'<' if descending else '>'} ({marks})")
        sql = self.select
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        if order_by:
            direction = " DESC" if descending else ""
            sql += " ORDER BY " + ", ".join(f"{_quote(name)}{direction}" for name in order_by)
        if limit:
            sql += " LIMIT ?"
        return sql


class SqliteReadStore:
    """A :class:`~cqrskit.ReadStore` in one SQLite file.

    :meth:`apply` runs in a worker thread on the store's write connection (one transaction
    per batch: the rows and the checkpoint); queries run on the calling thread with a read
    connection per thread. Open it with :meth:`open`.
    """

    def __init__(self, file: OpenedFile) -> None:
        self.path = file.path
        self._writer = file.writer
        self._write_lock = threading.Lock()  # one transaction at a time on the write connection
        self._readers = ReadConnections(file.path, file.synchronous)
        self._tables: dict[str, _TableSql] = {}

    @classmethod
    async def open(
        cls, path: str | Path, *, risk_recent_commits_on_power_loss: bool = False
    ) -> SqliteReadStore:
        """Open (creating if needed) the read store in the file ``path``.

        Raises :class:`StoreUnavailable` when the file cannot be opened or is not a database.
        """
        return cls(await open_file(path, READ_MODEL, risky=risk_recent_commits_on_power_loss))

    def _sql(self, table: Table) -> _TableSql:
        found = self._tables.get(table.name)
        if found is None or (found.table is not table and found.table != table):
            found = self._tables[table.name] = _TableSql(table)
        return found

    def _write(self, doing: str, work: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``work`` in one write transaction (called in a worker thread)."""
        with self._write_lock, translated(self.path, doing, read_model=True):
            connection = self._writer
            connection.execute("BEGIN IMMEDIATE")
            try:
                work(connection)
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise

    async def setup(self, tables: Sequence[Table]) -> None:
        statements = [sql for table in tables for sql in self._sql(table).create]

        def create(connection: sqlite3.Connection) -> None:
            for statement in statements:
                connection.execute(statement)

        await asyncio.to_thread(self._write, "creating read-model tables", create)

    async def checkpoint(self, projection: str) -> int:
        rows = self._readers.fetch_all(_GET_CHECKPOINT, (projection,))
        return int(rows[0][0]) if rows else 0

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        def work(connection: sqlite3.Connection) -> None:
            row = connection.execute(_GET_CHECKPOINT, (projection,)).fetchone()
            actual = row[0] if row else 0
            if actual != expected:
                raise CheckpointMoved(projection, expected, actual)
            unit = UnitOfWork(lambda table, key: self._load(connection, table, key))
            write(unit)
            for table, upserts, deletes in unit.changes():
                sql = self._sql(table)
                if upserts:
                    connection.executemany(sql.upsert, [sql.encode_row(r) for r in upserts])
                if deletes:
                    connection.executemany(sql.delete, [sql.encode_key(k) for k in deletes])
            connection.execute(_SET_CHECKPOINT, (projection, position))

        await asyncio.to_thread(self._write, "applying a projection batch", work)

    def _load(self, connection: sqlite3.Connection, table: Table, key: Key) -> Row | None:
        sql = self._sql(table)
        values = connection.execute(sql.get, sql.encode_key(key)).fetchone()
        return None if values is None else sql.decode(values)

    async def reset(self, projection: str, tables: Sequence[Table]) -> None:
        # Dropping and re-creating (rather than deleting rows) also brings a table whose
        # declared columns changed up to date, so a rebuild is how a read model migrates.
        statements = []
        for table in tables:
            statements.append(f"DROP TABLE IF EXISTS {_quote(table.name)}")
            statements.extend(self._sql(table).create)

        def work(connection: sqlite3.Connection) -> None:
            for statement in statements:
                connection.execute(statement)
            connection.execute(_SET_CHECKPOINT, (projection, 0))
            connection.execute(_FORGET_SOURCE, (projection,))

        await asyncio.to_thread(self._write, "resetting a projection", work)

    async def drop(self, projection: str, tables: Sequence[str]) -> None:
        statements = [f"DROP TABLE IF EXISTS {_quote(name)}" for name in tables]

        def work(connection: sqlite3.Connection) -> None:
            for statement in statements:
                connection.execute(statement)
            connection.execute(_FORGET_CHECKPOINT, (projection,))
            connection.execute(_FORGET_SOURCE, (projection,))

        await asyncio.to_thread(self._write, "dropping a projection's tables", work)
        for name in tables:
            self._tables.pop(name, None)

    async def source(self, projection: str) -> str | None:
        rows = self._readers.fetch_all(_GET_SOURCE, (projection,))
        return str(rows[0][0]) if rows else None

    async def record_source(self, projection: str, store_id: str) -> None:
        def work(connection: sqlite3.Connection) -> None:
            connection.execute(_SET_SOURCE, (projection, store_id))

        await asyncio.to_thread(self._write, "recording a projection's source", work)

    async def get(self, table: Table, *key: Any) -> Row | None:
        sql = self._sql(table)
        rows = self._readers.fetch_all(sql.get, sql.encode_key(key), read_model=True)
        return sql.decode(rows[0]) if rows else None

    async def find(
        self,
        table: Table,
        *,
        where: Mapping[str, Any] | None = None,
        order_by: Sequence[str] = (),
        after: Sequence[Any] | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Row]:
        sql = self._sql(table)
        where = where or {}
        statement = sql.find(where, order_by, after is not None, limit is not None, descending)
        parameters = [sql.encode(name, value) for name, value in where.items() if value is not None]
        if after is not None and order_by:
            if len(after) != len(order_by):
                raise ValueError("after needs one value per order_by column")
            parameters.extend(sql.encode(n, v) for n, v in zip(order_by, after, strict=True))
        if limit is not None:
            parameters.append(limit)
        rows = self._readers.fetch_all(statement, parameters, read_model=True)
        return [sql.decode(values) for values in rows]

    async def close(self) -> None:
        def close_writer() -> None:
            with self._write_lock:  # waits for a batch being applied
                self._writer.close()

        await asyncio.to_thread(close_writer)
        self._readers.close()
