"""SQL for read-model tables declared as :class:`~cqrskit.readmodel.Table` specs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from cqrskit.readmodel import ColumnType, Key, Row, Table

_SQL_TYPES = {
    ColumnType.TEXT: 'text COLLATE "C"',  # code-point order, as Python sorts strings
    ColumnType.INTEGER: "bigint",
    ColumnType.JSON: "jsonb",
    ColumnType.TIMESTAMP: "timestamptz",
}
_MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names


def create_statements(table: Table) -> list[sql.Composed]:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements for ``table``, all ``IF NOT EXISTS``."""
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(column.name),
            sql.SQL(_SQL_TYPES[column.type]),
            sql.SQL("" if column.nullable else " NOT NULL"),
        )
        for column in table.columns
    ]
    statements = [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            sql.Identifier(table.name), sql.SQL(", ").join(columns), _names(table.key)
        )
    ]
    for index in table.indexes:
        statements.append(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(_index_name(table.name, index)),
                sql.Identifier(table.name),
                _names(index),
            )
        )
    return statements


def _index_name(table: str, columns: tuple[str, ...]) -> str:
    name = f"{table}_{'_'.join(columns)}_idx"
    if len(name.encode()) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return f"{table[:40]}_{digest}_idx"


def dump(table: Table, name: str, value: Any) -> Any:
    """``value`` of column ``name`` as a query parameter."""
    if value is not None and _type_of(table, name) is ColumnType.JSON:
        return Jsonb(value)
    return value


def columns_of(table: Table, rows: Sequence[Row]) -> list[list[Any]]:
    """The parameters of the ``upsert`` query: one array per column."""
    arrays: list[list[Any]] = []
    for column in table.columns:
        values = [row[column.name] for row in rows]
        if column.type is ColumnType.JSON:
            values = [None if value is None else Jsonb(value) for value in values]
        arrays.append(values)
    return arrays


def keys_of(table: Table, keys: Sequence[Key]) -> list[list[Any]]:
    """The parameters of the ``delete`` query: one array per key column."""
    return [[key[i] for key in keys] for i in range(len(table.key))]


def _type_of(table: Table, name: str) -> ColumnType:
    for column in table.columns:
        if column.name == name:
            return column.type
    raise ValueError(f"table {table.name!r} has no column {name!r}")


def _names(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _unnest(table: Table, names: Sequence[str]) -> sql.Composed:
    arrays = sql.SQL(", ").join(
        sql.SQL("%b::{}[]").format(sql.SQL(_SQL_TYPES[_type_of(table, name)].split()[0]))
        for name in names
    )
    return sql.SQL("unnest({})").format(arrays)


def _get(table: Table) -> sql.Composed:
    conditions = sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in table.key
    )
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        _names(table.column_names), sql.Identifier(table.name), conditions
    )


def _upsert(table: Table) -> sql.Composed:
    others = [name for name in table.column_names if name not in table.key]
    if not others:
        return _insert(table, sql.SQL("DO NOTHING"))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in others
    )
    return _insert(table, sql.SQL("DO UPDATE SET {}").format(updates))


def _increment(table: Table) -> sql.Composed:
    """Add each row's values to the stored row (insert it if missing): ``c = c + EXCLUDED.c``
    is one atomic update, so batches of several processes never lose each other's counts."""
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = {1}.{0} + EXCLUDED.{0}").format(
            sql.Identifier(name), sql.Identifier(table.name)
        )
        for name in table.column_names
        if name not in table.key
    )
    return _insert(table, sql.SQL("DO UPDATE SET {}").format(updates))


def _insert(table: Table, on_conflict: sql.Composable) -> sql.Composed:
    """Insert the rows given as one array per column, doing ``on_conflict`` with a key taken."""
    return sql.SQL("INSERT INTO {} ({}) SELECT * FROM {} ON CONFLICT ({}) {}").format(
        sql.Identifier(table.name),
        _names(table.column_names),
        _unnest(table, table.column_names),
        _names(table.key),
        on_conflict,
    )


def _delete(table: Table) -> sql.Composed:
    return sql.SQL("DELETE FROM {} WHERE ({}) IN (SELECT * FROM {})").format(
        sql.Identifier(table.name), _names(table.key), _unnest(table, table.key)
    )


def _find(
    table: Table,
    equal: tuple[str, ...],
    nulls: tuple[str, ...],
    order_by: tuple[str, ...],
    keyset: bool,
    descending: bool = False,
) -> sql.Composed:
    conditions = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in equal]
    conditions += [sql.SQL("{} IS NULL").format(sql.Identifier(name)) for name in nulls]
    if keyset:
        placeholders = sql.SQL(", ").join(sql.Placeholder() for _ in order_by)
        compare = sql.SQL("<" if descending else ">")
        conditions.append(sql.SQL("({}) {} ({})").format(_names(order_by), compare, placeholders))
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
    direction = sql.SQL(" DESC" if descending else "")
    ordering = sql.SQL(", ").join(
        sql.SQL("{}{}").format(sql.Identifier(name), direction) for name in order_by or table.key
    )
    return sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
        _names(table.column_names),
        sql.Identifier(table.name),
        where,
        ordering,
    )


BUILDERS: dict[str, Callable[..., sql.Composed]] = {
    "get": _get,
    "upsert": _upsert,
    "increment": _increment,
    "delete": _delete,
    "find": _find,
}
