"""Blue/green projection versions on every backend, through the public API.

A projection ``notes`` keeps one row per note and a tally; version 2 stores the text upper-case,
so every answer tells which version gave it. An answer is whole when it has every note and the
tally agrees: a half-built read model would show fewer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cqrskit import (
    ANY_VERSION,
    Backend,
    Column,
    ColumnType,
    ConfigurationError,
    Event,
    EventCodec,
    Projection,
    ProjectionHalted,
    ProjectionRunner,
    ProjectionState,
    ProjectionVersions,
    RecordedEvent,
    ServingReadStore,
    Supervisor,
    Table,
    VersionRole,
    ViewTransaction,
)
from cqrskit.backends import delete_backend, open_backend
from tests.support.postgres import fresh_url
from tests.support.waiting import until


class Noted(Event, frozen=True, kw_only=True):
    note_id: str
    text: str


CODEC = EventCodec([Noted])
NOTES = Table(
    "notes",
    columns=(Column("note_id", ColumnType.TEXT), Column("text", ColumnType.TEXT)),
    key=("note_id",),
)
TALLY = Table(
    "notes_tally",
    columns=(Column("scope", ColumnType.TEXT), Column("count", ColumnType.INTEGER)),
    key=("scope",),
)


def _notes(version: int, shout: bool) -> Projection:
    projection = Projection("notes", tables=[NOTES, TALLY], version=version)

    @projection.on(Noted)
    def _noted(event: Noted, recorded: RecordedEvent, view: ViewTransaction) -> None:
        text = event.text.upper() if shout else event.text
        view.put(NOTES, {"note_id": event.note_id, "text": text})
        tally = view.get(TALLY, "all") or {"scope": "all", "count": 0}
        view.put(TALLY, {**tally, "count": tally["count"] + 1})

    return projection


NOTES_V1 = _notes(1, shout=False)
NOTES_V2 = _notes(2, shout=True)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _note(backend: Backend, first: int, count: int) -> int:
    position = 0
    for n in range(first, first + count):
        event = CODEC.new_event(Noted(note_id=f"note-{n:04d}", text=f"note {n}"))
        position = (await backend.events.append(f"note-{n}", [event], ANY_VERSION)).position
    return position


def _runners(backend: Backend, *projections: Projection) -> list[ProjectionRunner]:
    return [
        ProjectionRunner(projection, backend.events, backend.read, CODEC, batch_size=5)
        for projection in projections
    ]


async def _answer(queries: ServingReadStore) -> tuple[int, int, set[str]]:
    """(notes, tally, which case the texts are in) as one query sees them."""
    rows = await queries.find(NOTES, order_by=("note_id",))
    tally = await queries.get(TALLY, "all")
    cases = {"upper" if row["text"].isupper() else "lower" for row in rows}
    return len(rows), tally["count"] if tally else 0, cases


async def _run_to(backend: Backend, head: int, projection: Projection) -> None:
    supervisor = Supervisor(backend.events, backend.read, _runners(backend, projection))
    supervisor.start()
    try:
        assert await supervisor.wait_for_position(head, 60)
    finally:
        await supervisor.stop()


async def _built_v1(backend: Backend, count: int) -> int:
    head = await _note(backend, 0, count)
    await _run_to(backend, head, NOTES_V1)
    return head


async def test_an_unversioned_projection_is_version_1_under_its_own_table_names(
    backend: Backend,
) -> None:
    unversioned = Projection("notes", tables=[NOTES, TALLY])
    assert (unversioned.version, unversioned.key) == (1, "notes")
    assert unversioned.stored_tables == unversioned.tables  # the very tables, dead letters too
    assert unversioned.stored_tables[:2] == (NOTES, TALLY)
    head = await _built_v1(backend, 3)
    versions = ProjectionVersions(backend.read)
    await versions.declare([unversioned])

    assert await versions.serving("notes") == 1
    [recorded] = await versions.versions("notes")
    assert (recorded.version, recorded.role, recorded.tables[:2]) == (
        1,
        VersionRole.SERVING,
        ("notes", "notes_tally"),
    )
    assert await backend.read.checkpoint("notes") == head
    assert len(await backend.read.find(NOTES)) == 3  # the very table, under its own name


async def test_a_new_version_builds_aside_then_serves_whole_under_a_steady_query_load(
    backend: Backend,
) -> None:
    count = 60
    await _built_v1(backend, count)
    clock = Clock()
    versions = ProjectionVersions(backend.read, clock=clock)
    queries = ServingReadStore(backend.read, versions, [NOTES_V1, NOTES_V2])
    supervisor = Supervisor(
        backend.events, backend.read, _runners(backend, NOTES_V1, NOTES_V2), versions=versions
    )
    await versions.declare([NOTES_V1, NOTES_V2])
    assert [(v.version, v.role) for v in await versions.versions("notes")] == [
        (1, VersionRole.SERVING),
        (2, VersionRole.BUILDING),
    ]
    answers: list[tuple[int, int, set[str]]] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            answers.append(await _answer(queries))
            await asyncio.sleep(0)

    answers.append(await _answer(queries))  # before the build starts: version 1 answers
    loader = asyncio.create_task(load())
    supervisor.start()
    try:
        await until(lambda: _serving_is(versions, 2), what="version 2 serving")
        stop.set()
        await loader
        answers.append(await _answer(queries))  # one more, from version 2

        assert all(notes == tally == count for notes, tally, _ in answers), "a partial answer"
        served = [cases for _, _, cases in answers]
        assert served[0] == {"lower"}
        assert served[-1] == {"upper"}
        switched = served.index({"upper"})
        assert served[switched:] == [{"upper"}] * (len(served) - switched), "went back to v1"
        assert served[:switched] == [{"lower"}] * switched

        reports = {report.key: report for report in await supervisor.report()}
        assert (reports["notes"].role, reports["notes"].state) == (
            VersionRole.RETIRED,
            ProjectionState.RETIRED,
        )
        assert reports["notes@v2"].role is VersionRole.SERVING
        assert reports["notes@v2"].lag_events == 0

        # Read-your-writes follows the serving version.
        head = await _note(backend, count, 1)
        assert await supervisor.wait_for_position(head, 60)
        assert await _answer(queries) == (count + 1, count + 1, {"upper"})
    finally:
        stop.set()
        await supervisor.stop()

    # The retired version's tables go after the grace period, not before.
    assert await versions.drop_retired(grace=600) == []
    clock.now += timedelta(seconds=601)
    [dropped] = await versions.drop_retired(grace=600)
    assert (dropped.version, dropped.tables) == (1, tuple(t.name for t in NOTES_V1.tables))
    assert NOTES_V2.dead_letters.tables[0].name not in dropped.tables  # its own, kept
    assert [(v.version, v.role) for v in await versions.versions("notes")] == [
        (2, VersionRole.SERVING)
    ]
    assert await backend.read.checkpoint("notes") == 0
    await backend.read.setup([NOTES])
    assert await backend.read.find(NOTES) == []
    assert await _answer(queries) == (count + 1, count + 1, {"upper"})


async def test_only_a_new_version_declared_on_a_fresh_read_model_serves_at_once(
    backend: Backend,
) -> None:
    versions = ProjectionVersions(backend.read)
    await versions.declare([NOTES_V2])
    assert await versions.serving("notes") == 2
    queries = ServingReadStore(backend.read, versions, [NOTES_V2])
    await _run_to(backend, await _note(backend, 0, 4), NOTES_V2)
    assert await _answer(queries) == (4, 4, {"upper"})
    assert (await queries.resolve(NOTES)).name == "notes__v2"


async def test_a_new_version_of_an_empty_log_is_switched_in_without_an_event(
    backend: Backend,
) -> None:
    versions = ProjectionVersions(backend.read)
    await versions.declare([NOTES_V1, NOTES_V2])
    assert await versions.serving("notes") == 1
    supervisor = Supervisor(
        backend.events, backend.read, _runners(backend, NOTES_V1, NOTES_V2), versions=versions
    )
    supervisor.start()
    try:
        # The watcher's doing: no batch was committed to trigger it.
        await until(lambda: _serving_is(versions, 2), what="version 2 serving")
    finally:
        await supervisor.stop()


async def _serving_is(versions: ProjectionVersions, version: int) -> bool:
    return await versions.serving("notes") == version


def test_a_version_must_be_a_whole_number_from_1() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="version must be a whole number"):
            Projection("notes", tables=[NOTES], version=bad)  # type: ignore[arg-type]


async def test_a_version_writing_a_table_it_did_not_declare_fails_and_writes_nothing(
    backend: Backend,
) -> None:
    careless = Projection("careless", tables=[NOTES], version=2)

    @careless.on(Noted)
    def _noted(event: Noted, recorded: RecordedEvent, view: ViewTransaction) -> None:
        view.put(NOTES, {"note_id": event.note_id, "text": event.text})
        view.put(TALLY, {"scope": "all", "count": 1})

    [runner] = _runners(backend, careless)
    await runner.setup()
    await _note(backend, 0, 1)
    with pytest.raises(ProjectionHalted) as halted:  # the policy ``stop``: a dead letter
        await runner.catch_up()
    assert "did not declare table 'notes_tally'" in halted.value.letter.error
    assert await backend.read.checkpoint("careless@v2") == 0
    assert await backend.read.find(careless.stored_table(NOTES)) == []


# --- several processes sharing one read store ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return fresh_url(request)
    return f"sqlite:///{tmp_path / 'notes.db'}"


@contextlib.asynccontextmanager
async def _process(url: str) -> AsyncIterator[Backend]:
    opened = await open_backend(url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_processes_sharing_a_read_store_agree_on_the_serving_version(
    shared_url: str,
) -> None:
    async with _process(shared_url) as old, _process(shared_url) as new:
        count = 30
        await _built_v1(old, count)
        # ``old`` still runs the release that knows version 1 only; ``new`` brings version 2.
        old_versions, new_versions = ProjectionVersions(old.read), ProjectionVersions(new.read)
        old_queries = ServingReadStore(old.read, old_versions, [NOTES_V1])
        new_queries = ServingReadStore(new.read, new_versions, [NOTES_V1, NOTES_V2])
        old_supervisor = Supervisor(
            old.events, old.read, _runners(old, NOTES_V1), versions=old_versions
        )
        new_supervisor = Supervisor(
            new.events, new.read, _runners(new, NOTES_V1, NOTES_V2), versions=new_versions
        )
        old_supervisor.start()
        new_supervisor.start()
        try:
            await until(lambda: _serving_is(new_versions, 2), what="version 2 serving")
            await until(lambda: _serving_is(old_versions, 2), what="the old process following")
            assert await _answer(old_queries) == (count, count, {"upper"})
            assert await _answer(new_queries) == (count, count, {"upper"})

            async def old_stopped_version_1() -> bool:
                [report] = old_supervisor.status()
                return report.state is ProjectionState.RETIRED

            await until(old_stopped_version_1, what="the old process retiring version 1")
            head = await _note(old, count, 1)  # a write through the old process
            assert await old_supervisor.wait_for_position(head, 60)
            assert await _answer(old_queries) == (count + 1, count + 1, {"upper"})
        finally:
            await old_supervisor.stop()
            await new_supervisor.stop()


async def test_deleting_a_postgresql_store_drops_every_version_s_tables(
    request: pytest.FixtureRequest,
) -> None:
    url = fresh_url(request)
    async with _process(url) as first:
        await _run_to(first, await _note(first, 0, 3), NOTES_V2)
    await delete_backend(url, NOTES_V1.tables)  # what the release declaring version 1 knows
    async with _process(url) as again:
        await again.read.setup(NOTES_V2.stored_tables)
        assert await again.read.find(NOTES_V2.stored_table(NOTES)) == []  # no stale rows
