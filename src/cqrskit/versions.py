"""Blue/green projection versions: which version of each projection answers queries.

A :class:`~cqrskit.Projection` declares a ``version``. When a deploy brings a new version, it
is built from zero into tables of its own while the version that serves keeps answering
queries; once its checkpoint has reached the head of the log, queries switch to it in one step
and the old version is *retired*: its tables are dropped after a grace period, or on command.

The record of each projection's versions is itself a read-model table
(:data:`VERSIONS_TABLE`), so every backend keeps it, and it is changed by compare-and-set (the
read store's checkpoint of a key of its own), so that several processes sharing a read store
(PostgreSQL) agree on which version serves: each re-reads it at most every
:data:`SERVING_REFRESH` seconds, and a retired version's tables outlive the switch by at least
:data:`MIN_GRACE`, so no process still reading them finds them gone.

:class:`ProjectionVersions` keeps the record; :class:`ServingReadStore` is the read store as
queries see it, each declared table resolved to the tables of the serving version;
:class:`~cqrskit.Supervisor` switches a new version in when it has caught up and stops the
runners of the versions it retired.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cqrskit.errors import CheckpointMoved
from cqrskit.projections import Projection, version_key, version_table
from cqrskit.readmodel import Column, ColumnType, ReadStore, Row, Table, ViewTransaction

__all__ = [
    "MIN_GRACE",
    "SERVING_REFRESH",
    "VERSIONS_TABLE",
    "ProjectionVersion",
    "ProjectionVersions",
    "ServingReadStore",
    "VersionRole",
]

#: seconds a process trusts what it last read of which version serves
SERVING_REFRESH = 1.0
#: a retired version's tables are never dropped sooner than this many seconds after the
#: switch: by then every process sharing the read store has seen it
MIN_GRACE = 3 * SERVING_REFRESH

VERSIONS_TABLE = Table(
    "cqrskit_projection_versions",
    columns=(
        Column("projection", ColumnType.TEXT),
        Column("serving", ColumnType.INTEGER),
        Column("versions", ColumnType.JSON),
    ),
    key=("projection",),
)


def _generation_key(name: str) -> str:
    # The checkpoint under this key counts the record's changes: bumping it in the same
    # transaction as the write makes every change a compare-and-set.
    return f"cqrskit.versions/{name}"


class VersionRole(enum.StrEnum):
    """What a version of a projection is for."""

    #: its tables answer queries
    SERVING = "serving"
    #: being built (or kept up) beside the serving version; serves once it has caught up
    BUILDING = "building"
    #: replaced by a newer version; its tables are dropped after the grace period
    RETIRED = "retired"


@dataclass(frozen=True)
class ProjectionVersion:
    """One version of a projection: its role since when, and the tables it stores rows in."""

    name: str
    version: int
    role: VersionRole
    tables: tuple[str, ...]
    since: datetime

    @property
    def key(self) -> str:
        """Its checkpoint key (:func:`~cqrskit.projections.version_key`)."""
        return version_key(self.name, self.version)

    def encoded(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "role": self.role.value,
            "tables": list(self.tables),
            "since": self.since.isoformat(),
        }

    @classmethod
    def decoded(cls, name: str, value: Mapping[str, Any]) -> ProjectionVersion:
        return cls(
            name,
            int(value["version"]),
            VersionRole(value["role"]),
            tuple(value["tables"]),
            datetime.fromisoformat(value["since"]),
        )


def _serving(versions: Sequence[ProjectionVersion]) -> int:
    return next((v.version for v in versions if v.role is VersionRole.SERVING), 1)


class ProjectionVersions:
    """The record of which version of each projection serves, which are being built and which
    wait to be dropped, in a read store."""

    def __init__(
        self,
        read_store: ReadStore,
        *,
        refresh: float = SERVING_REFRESH,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._read = read_store
        self._refresh = refresh
        self._clock = clock
        self._serving: dict[str, tuple[int, float]] = {}
        self._set_up = False

    async def setup(self) -> None:
        """Create the record's table if needed."""
        if not self._set_up:
            await self._read.setup([VERSIONS_TABLE])
            self._set_up = True

    async def versions(self, name: str) -> list[ProjectionVersion]:
        """Every recorded version of projection ``name``, oldest first (empty if none)."""
        await self.setup()
        row = await self._read.get(VERSIONS_TABLE, name)
        found = _decoded(name, row)
        self._remember(name, found)
        return found

    async def all_versions(self) -> list[ProjectionVersion]:
        """Every recorded version of every projection, by projection then version."""
        await self.setup()
        rows = await self._read.find(VERSIONS_TABLE, order_by=("projection",))
        return [v for row in rows for v in _decoded(row["projection"], row)]

    async def serving(self, name: str) -> int:
        """The version of ``name`` that answers queries (1 for a projection never declared
        with versions), as read at most :data:`SERVING_REFRESH` seconds ago."""
        known = self._serving.get(name)
        if known is not None and time.monotonic() - known[1] < self._refresh:
            return known[0]
        return _serving(await self.versions(name))

    async def declare(self, projections: Iterable[Projection]) -> None:
        """Record the declared versions of each projection: the first time a projection is
        seen, its serving version is 1 if version 1 has a read model (one built before
        versions existed) and otherwise the lowest declared; a declared version newer than
        the serving one is recorded as building."""
        declared: dict[str, list[Projection]] = {}
        for projection in projections:
            declared.setdefault(projection.name, []).append(projection)
        for name, versions in declared.items():
            legacy = await self._read.checkpoint(name) > 0
            now = self._clock()

            def change(
                current: list[ProjectionVersion],
                versions: list[Projection] = versions,
                legacy: bool = legacy,
                now: datetime = now,
                name: str = name,
            ) -> list[ProjectionVersion] | None:
                recorded = list(current)
                if not recorded:
                    first = 1 if legacy else min(p.version for p in versions)
                    recorded.append(
                        ProjectionVersion(
                            name, first, VersionRole.SERVING, _tables_of(versions, first), now
                        )
                    )
                known = {v.version for v in recorded}
                serving = _serving(recorded)
                for projection in sorted(versions, key=lambda p: p.version):
                    if projection.version > serving and projection.version not in known:
                        recorded.append(
                            ProjectionVersion(
                                name,
                                projection.version,
                                VersionRole.BUILDING,
                                tuple(t.name for t in projection.stored_tables),
                                now,
                            )
                        )
                return None if recorded == current else recorded

            await self._change(name, change)

    async def switch(self, name: str, version: int) -> bool:
        """Make ``version`` of ``name`` (a building one) serve, and retire every older one;
        False, changing nothing, if it is not building. The caller makes sure it has caught
        up (:class:`~cqrskit.Supervisor` does: it switches once the version's checkpoint
        reaches the head of the log)."""
        switched = False
        now = self._clock()

        def change(current: list[ProjectionVersion]) -> list[ProjectionVersion] | None:
            nonlocal switched
            target = next((v for v in current if v.version == version), None)
            if target is None or target.role is not VersionRole.BUILDING:
                switched = False
                return None
            switched = True
            changed = []
            for recorded in current:
                if recorded.version == version:
                    recorded = replace(recorded, role=VersionRole.SERVING, since=now)
                elif recorded.version < version and recorded.role is not VersionRole.RETIRED:
                    recorded = replace(recorded, role=VersionRole.RETIRED, since=now)
                changed.append(recorded)
            return changed

        await self._change(name, change)
        return switched

    async def drop_retired(
        self, name: str | None = None, *, grace: float = MIN_GRACE
    ) -> list[ProjectionVersion]:
        """Drop the tables (and forget the checkpoints) of the versions of ``name`` (default:
        every projection) retired at least ``grace`` seconds ago (never less than
        :data:`MIN_GRACE`); return those dropped."""
        grace = max(grace, MIN_GRACE)
        now = self._clock()
        recorded = await (self.versions(name) if name is not None else self.all_versions())
        due = [
            v
            for v in recorded
            if v.role is VersionRole.RETIRED and (now - v.since).total_seconds() >= grace
        ]
        for version in due:
            await self._read.drop(version.key, version.tables)
        for projection in {v.name for v in due}:
            gone = {v.version for v in due if v.name == projection}

            def change(
                current: list[ProjectionVersion], gone: set[int] = gone
            ) -> list[ProjectionVersion] | None:
                kept = [
                    v for v in current if not (v.version in gone and v.role is VersionRole.RETIRED)
                ]
                return None if kept == current else kept

            await self._change(projection, change)
        return due

    # -- private --

    async def _change(
        self,
        name: str,
        change: Callable[[list[ProjectionVersion]], list[ProjectionVersion] | None],
    ) -> None:
        await self.setup()
        key = _generation_key(name)
        while True:
            # The generation first: a change committed after it makes the write below fail.
            generation = await self._read.checkpoint(key)
            current = _decoded(name, await self._read.get(VERSIONS_TABLE, name))
            changed = change(current)
            if changed is None:
                self._remember(name, current)
                return
            row = {
                "projection": name,
                "serving": _serving(changed),
                "versions": [v.encoded() for v in changed],
            }

            def write(view: ViewTransaction, row: Row = row) -> None:
                view.put(VERSIONS_TABLE, row)

            with contextlib.suppress(CheckpointMoved):  # another process changed it: again
                await self._read.apply(key, generation, generation + 1, write)
                self._remember(name, changed)
                return

    def _remember(self, name: str, versions: Sequence[ProjectionVersion]) -> None:
        self._serving[name] = (_serving(versions), time.monotonic())


def _decoded(name: str, row: Row | None) -> list[ProjectionVersion]:
    if row is None:
        return []
    return sorted(
        (ProjectionVersion.decoded(name, value) for value in row["versions"]),
        key=lambda v: v.version,
    )


def _tables_of(declared: Sequence[Projection], version: int) -> tuple[str, ...]:
    same = [p for p in declared if p.version == version]
    # A version not declared here stores the tables the newest declared one names.
    if same:
        return tuple(table.name for table in same[0].stored_tables)
    newest = max(declared, key=lambda p: p.version)
    return tuple(
        t.name for t in Projection(newest.name, newest.view_tables, version=version).stored_tables
    )


class ServingReadStore:
    """A :class:`~cqrskit.ReadStore` for queries: reads of a table declared by one of
    ``projections`` go to the tables of that projection's serving version; everything else
    goes to ``read_store`` unchanged.

    Each query resolves its table once, so one query's answer comes whole from one version.
    """

    def __init__(
        self, read_store: ReadStore, versions: ProjectionVersions, projections: Iterable[Projection]
    ) -> None:
        self._read = read_store
        self._versions = versions
        self._owner: dict[str, str] = {}
        self._declared: dict[tuple[str, int, str], Table] = {}
        for projection in projections:
            # The handlers' tables only: dead letters are read where they are, per version.
            stored_tables = projection.stored_tables[: len(projection.view_tables)]
            for table, stored in zip(projection.view_tables, stored_tables, strict=True):
                self._owner[table.name] = projection.name
                self._declared[(projection.name, projection.version, table.name)] = stored

    async def resolve(self, table: Table) -> Table:
        """The table that holds the rows of ``table`` in the serving version."""
        name = self._owner.get(table.name)
        if name is None:
            return table
        version = await self._versions.serving(name)
        declared = self._declared.get((name, version, table.name))
        return declared if declared is not None else version_table(table, version)

    async def get(self, table: Table, *key: Any) -> Row | None:
        return await self._read.get(await self.resolve(table), *key)

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
        return await self._read.find(
            await self.resolve(table),
            where=where,
            order_by=order_by,
            after=after,
            limit=limit,
            descending=descending,
        )

    async def setup(self, tables: Sequence[Table]) -> None:
        await self._read.setup(tables)

    async def checkpoint(self, projection: str) -> int:
        return await self._read.checkpoint(projection)

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        await self._read.apply(projection, expected, position, write)

    async def reset(self, projection: str, tables: Sequence[Table]) -> None:
        await self._read.reset(projection, tables)

    async def drop(self, projection: str, tables: Sequence[str]) -> None:
        await self._read.drop(projection, tables)

    async def source(self, projection: str) -> str | None:
        return await self._read.source(projection)

    async def record_source(self, projection: str, store_id: str) -> None:
        await self._read.record_source(projection, store_id)

    async def close(self) -> None:
        await self._read.close()
