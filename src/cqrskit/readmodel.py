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

    def increment(self, table: Table, row: Row) -> None:
        """Add ``row``'s integer values to the row with its key (created with zeros if there is
        none), as one atomic increment on backends where several processes write the table at
        once (PostgreSQL), so that counters shared by every partition of a projection stay
        exact. Every column outside the key must be an integer; those ``row`` leaves out are
        not changed. A row a batch increments cannot also be put or deleted in that batch.
        """
        ...


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

    async def drop(self, projection: str, tables: Sequence[str]) -> None:
        """Drop the tables named ``tables`` (those that exist) and forget the checkpoint and
        source of ``projection``, atomically: how a retired projection version goes."""
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

    Increments (:meth:`increment`) are summed per row. A backend whose batches never run side
    by side (one writer) leaves ``atomic_increments`` false: :meth:`changes` then folds them
    into the upserts (stored row plus the sums). One where they do (PostgreSQL) sets it and
    writes :meth:`increments` as atomic ``column = column + delta`` updates.
    """

    def __init__(self, load: Loader, *, atomic_increments: bool = False) -> None:
        self._load = load
        self._atomic_increments = atomic_increments
        self._rows: dict[str, dict[Key, Row | None]] = {}
        self._dirty: dict[str, set[Key]] = {}
        self._tables: dict[str, Table] = {}
        self._sums: dict[str, dict[Key, dict[str, int]]] = {}
        self._countable: set[str] = set()  # tables whose every non-key column is an integer

    def get(self, table: Table, *key: Any) -> Row | None:
        if self._sums:
            sums = self._sums.get(table.name, {}).get(key)
            if sums is not None:
                return self._incremented(table, key, sums)
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._rows_of(table)
        found: Row | None = rows.get(key, _UNSEEN)
        if found is _UNSEEN:
            found = rows[key] = self._load(table, key)
        return found

    def put(self, table: Table, row: Row) -> None:
        if not row.keys() >= table.column_set:
            missing = [name for name in table.column_names if name not in row]
            raise ValueError(f"row for {table.name!r} lacks column(s) {missing}")
        key = table.key_of(row)
        if self._sums:
            self._refuse_incremented(table, key, "put")
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._rows_of(table)
        rows[key] = row
        self._dirty[table.name].add(key)

    def delete(self, table: Table, *key: Any) -> None:
        self._refuse_incremented(table, key, "deleted")
        self._rows_of(table)[key] = None
        self._dirty[table.name].add(key)

    def increment(self, table: Table, row: Row) -> None:
        key = table.key_of(row)
        if key in self._dirty.get(table.name, ()):
            raise ValueError(f"row {key} of {table.name!r} is put or deleted in this batch")
        deltas = {name: value for name, value in row.items() if name not in table.key}
        if (
            table.name not in self._countable
            or not deltas.keys() <= table.column_set
            or any(type(value) is not int for value in deltas.values())
        ):
            _check_counters(table, deltas)  # raises, saying what is wrong, or passes
            self._countable.add(table.name)  # its columns' types need no second look
        self._tables[table.name] = table
        sums = self._sums.setdefault(table.name, {}).setdefault(key, {})
        for name, value in deltas.items():
            sums[name] = sums.get(name, 0) + value

    def increments(self) -> Iterator[tuple[Table, list[Row]]]:
        """Per table incremented (with ``atomic_increments``): one row per key holding the
        sums to add, every counter column present (0 if unchanged), in key order, so that
        concurrent batches lock the rows in the same order and cannot deadlock."""
        if not self._atomic_increments:
            return
        for name, sums in self._sums.items():
            table = self._tables[name]
            yield table, [self._delta_row(table, key, sums[key]) for key in sorted(sums)]

    def changes(self) -> Iterator[tuple[Table, list[Row], list[Key]]]:
        """Per table touched: rows to upsert and keys to delete (increments folded in unless
        ``atomic_increments``)."""
        if not self._atomic_increments:
            for name, sums in self._sums.items():
                table = self._tables[name]
                rows = self._rows_of(table)
                for key, added in sums.items():
                    rows[key] = self._incremented(table, key, added)
                    self._dirty[name].add(key)
            self._sums = {}
        for name, keys in self._dirty.items():
            rows = self._rows[name]
            upserts: list[Row] = []
            deletes: list[Key] = []
            for key in keys:
                row = rows[key]
                if row is None:
                    deletes.append(key)
                else:
                    upserts.append(row)
            yield self._tables[name], upserts, deletes

    def _rows_of(self, table: Table) -> dict[Key, Row | None]:
        rows = self._rows.get(table.name)
        if rows is None:
            rows = self._rows[table.name] = {}
            self._dirty[table.name] = set()
            self._tables[table.name] = table
        return rows

    def _refuse_incremented(self, table: Table, key: Key, what: str) -> None:
        if key in self._sums.get(table.name, {}):
            raise ValueError(f"row {key} of {table.name!r} is incremented, so cannot be {what}")

    def _incremented(self, table: Table, key: Key, sums: Mapping[str, int]) -> Row:
        """The row as stored (zeros if missing) plus ``sums``."""
        rows = self._rows_of(table)
        if key not in rows:
            rows[key] = self._load(table, key)
        stored = rows[key]
        row = dict(stored) if stored is not None else self._delta_row(table, key, {})
        for name, value in sums.items():
            row[name] += value
        return row

    @staticmethod
    def _delta_row(table: Table, key: Key, sums: Mapping[str, int]) -> Row:
        row: Row = dict(zip(table.key, key, strict=True))
        row.update({name: sums.get(name, 0) for name in table.column_names if name not in row})
        return row


def _check_counters(table: Table, deltas: Mapping[str, Any]) -> None:
    for column in table.columns:
        if column.name not in table.key and column.type is not ColumnType.INTEGER:
            raise ValueError(
                f"{table.name!r} cannot be incremented: column {column.name!r} is not an integer"
            )
    unknown = [name for name in deltas if name not in table.column_names]
    if unknown:
        raise ValueError(f"table {table.name!r} has no column(s) {unknown}")
    for name, value in deltas.items():
        if type(value) is not int:
            raise ValueError(f"increment of {table.name}.{name} must be an int, not {value!r}")
