"""The read-model port: declared tables, a unit of work for projections, and simple queries.

Projections describe their tables (:class:`Table`) and change rows through a
:class:`ViewTransaction`. Each backend turns a batch of changes into one database transaction
that also moves the projection's checkpoint, so a batch is applied entirely or not at all.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Column",
    "ColumnType",
    "Key",
    "Loader",
    "ReadStore",
    "Row",
    "Table",
    "UnitOfWork",
    "ViewTransaction",
]

Row = dict[str, Any]
Key = tuple[Any, ...]


class ColumnType(enum.Enum):
    """The value types a read-model column can hold (as Python sees them)."""

    TEXT = "text"  # str
    INTEGER = "integer"  # int (64-bit)
    JSON = "json"  # anything msgspec encodes: dict, list, str, int, bool, None
    TIMESTAMP = "timestamp"  # timezone-aware datetime


@dataclass(frozen=True)
class Column:
    """One column of a read-model table."""

    name: str
    type: ColumnType
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    """A read-model table: columns, primary key, and the indexes queries need."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    column_names: tuple[str, ...] = field(init=False)
    #: the column names as a set, for a row's check at C speed (``row.keys() >= column_set``)
    column_set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(column.name for column in self.columns)
        object.__setattr__(self, "column_names", names)
        object.__setattr__(self, "column_set", frozenset(names))
        unknown = [name for name in (*self.key, *sum(self.indexes, ())) if name not in names]
        if unknown:
            raise ValueError(f"table {self.name!r} has no column(s) {unknown}")

    def key_of(self, row: Mapping[str, Any]) -> Key:
        """The primary key of ``row``."""
        key = self.key
        if len(key) == 1:  # most tables: no generator to run
            return (row[key[0]],)
        return tuple([row[name] for name in key])


class ViewTransaction(Protocol):
    """The read model as a projection handler sees it within one batch.

    ``get`` returns the row as it stands in this batch; change it and ``put`` it back.
    Nothing is written until the batch commits, together with the checkpoint.
    """

    def get(self, table: Table, *key: Any) -> Row | None: ...

    def put(self, table: Table, row: Row) -> None: ...

    def delete(self, table: Table, *key: Any) -> None: ...


class ReadStore(Protocol):
    """Storage of read-model tables and projection checkpoints."""

    async def setup(self, tables: Sequence[Table]) -> None:
        """Create ``tables`` (and the checkpoint table) if they do not exist."""
        ...

    async def checkpoint(self, projection: str) -> int:
        """The global position up to which ``projection`` has been applied (0 if never)."""
        ...

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        """Run ``write`` and move the checkpoint from ``expected`` to ``position``, atomically.

        ``write`` is synchronous and may run in a worker thread. Raises
        :class:`CheckpointMoved` (and writes nothing) when the stored checkpoint is not
        ``expected``: another runner got there first.
        """
        ...

    async def reset(self, projection: str, tables: Sequence[Table]) -> None:
        """Empty ``tables``, set the checkpoint of ``projection`` to 0 and forget its source,
        atomically."""
        ...

    async def source(self, projection: str) -> str | None:
        """The identity of the event store (:meth:`EventStore.store_id`) ``projection`` was
        built from, or None if none was recorded (a new, reset or older read model)."""
        ...

    async def record_source(self, projection: str, store_id: str) -> None:
        """Record that ``projection`` is built from the event store ``store_id``."""
        ...

    async def get(self, table: Table, *key: Any) -> Row | None:
        """The row with primary key ``key``, or None."""
        ...

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
        """Rows whose columns equal ``where``, ordered by ``order_by`` (ascending, or
        descending on every column with ``descending``).

        ``after`` continues a keyset pagination: only rows whose ``order_by`` values come
        strictly after it in that order are returned.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


Loader = Callable[[Table, Key], Row | None]


_UNSEEN: Any = object()


class UnitOfWork:
    """A :class:`ViewTransaction` that keeps a batch's changes in memory until flushed.

    Backends give it a ``load`` function for rows not yet seen in the batch and write out
    :meth:`changes` at the end, so a batch costs one read per distinct row touched and one
    bulk write per table.
    """

    def __init__(self, load: Loader) -> None:
        self._load = load
        # per table name: every row seen in the batch (None: absent or deleted), and the rows
        # changed (the same objects), so a row put many times is written once
        self._rows: dict[str, dict[Key, Row | None]] = {}
        self._dirty: dict[str, dict[Key, Row | None]] = {}
        self._tables: dict[str, Table] = {}

    def get(self, table: Table, *key: Any) -> Row | None:
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._start(table)
        found: Row | None = rows.get(key, _UNSEEN)
        if found is _UNSEEN:
            found = rows[key] = self._load(table, key)
        return found

    def put(self, table: Table, row: Row) -> None:
        if not row.keys() >= table.column_set:
            missing = [name for name in table.column_names if name not in row]
            raise ValueError(f"row for {table.name!r} lacks column(s) {missing}")
        key = table.key_of(row)
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._start(table)
        rows[key] = self._dirty[table.name][key] = row

    def delete(self, table: Table, *key: Any) -> None:
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._start(table)
        rows[key] = self._dirty[table.name][key] = None

    def changes(self) -> Iterator[tuple[Table, list[Row], list[Key]]]:
        """Per table touched: rows to upsert and keys to delete."""
        for name, changed in self._dirty.items():
            upserts: list[Row] = []
            deletes: list[Key] = []
            for key, row in changed.items():
                if row is None:
                    deletes.append(key)
                else:
                    upserts.append(row)
            yield self._tables[name], upserts, deletes

    def _start(self, table: Table) -> dict[Key, Row | None]:
        rows = self._rows[table.name] = {}
        self._dirty[table.name] = {}
        self._tables[table.name] = table
        return rows
