"""Schema migrations (app/event_store/migrations/) on SQLite and PostgreSQL: from an empty
database, and from one made before migrations existed, with its events, keys, snapshots and
idempotency records, which all read back afterwards. The newest revision's schema is the tables'
metadata (no autogenerate difference), so the two cannot drift."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store import migrate, open_store, verify_schema
from app.event_store.base import EventStore, IdempotencyRecord, NewEvent, split_stream_id
from app.event_store.memory import MemoryEventStore
from app.event_store.migrations import SchemaError, SchemaOutOfDate, head
from app.event_store.sqlalchemy import SqlAlchemyEventStore
from app.event_store.tables import metadata
from app.service.handlers import CommandContext, CommandHandlers
from tests.conftest import POSTGRES_URL, require, sqlite_url
from tests.harness import legacy_schema

KINDS = ["sqlite", "sqlite-aiosqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
TABLES = (*metadata.tables, "alembic_version")
T = TypeVar("T")


async def empty_database(kind: str, tmp_path: Path) -> str:
    """The URL of a database without any of the event store's tables."""
    if kind.startswith("sqlite"):
        return sqlite_url(tmp_path)
    url = require(POSTGRES_URL, "TEST_POSTGRES_URL")
    await run(url, f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")
    return url


async def on(url: str, work: Callable[[sa.Connection], T]) -> T:
    """`work` on a connection to `url`, in a transaction committed after it."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


async def run(url: str, *statements: str) -> None:
    await on(url, lambda conn: [conn.exec_driver_sql(statement) for statement in statements])


async def schema_difference(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the tables."""
    return await on(url, lambda conn: compare_metadata(
        MigrationContext.configure(conn, opts={"compare_server_default": True}), metadata))


async def at_first_revision(url: str) -> None:
    """The empty database at `url` as revision 0001 leaves it: today's tables, stamped."""
    await on(url, legacy_schema.metadata.create_all)
    await run(url, "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
              "INSERT INTO alembic_version VALUES ('0001')")


async def table_names(url: str) -> set[str]:
    return await on(url, lambda conn: set(sa.inspect(conn).get_table_names()))


async def open_kind(kind: str, url: str) -> EventStore:
    return await open_store(url, default_schema(), direct=kind != "sqlite-aiosqlite")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_empty_database_migrates_to_exactly_the_tables(kind: str, tmp_path: Path) -> None:
    url = await empty_database(kind, tmp_path)

    assert await migrate(url) == (None, head())

    assert await schema_difference(url) == []
    assert await migrate(url) == (head(), head())  # again: nothing to do
    store = await open_kind(kind, url)
    try:
        await store.append([NewEvent("a-1", "Tick", {})], {"a-1": 0},
                           idempotency=IdempotencyRecord("k", "Tick", "f"))
        assert [e.stream_id for e in await store.read_all()] == ["a-1"]
        assert await store.find_command("k") is not None
    finally:
        await store.close()


async def test_a_new_sqlite_file_migrates_itself_when_opened(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    store = await open_store(url, default_schema())
    await store.close()
    assert await schema_difference(url) == []
    assert await migrate(url) == (head(), head())


async def write_with_todays_code(url: str) -> MemoryEventStore:
    """A database in the shape the service made before migrations: the old tables (frozen in
    tests/harness/legacy_schema.py), holding rows as the service writes them: a location, an
    employee with sealed personal data, its snapshot, idempotency records. The same history
    stays in memory, to compare with."""
    memory = await MemoryEventStore.open(uuid.uuid4().hex, default_schema())
    handlers = CommandHandlers(memory, default_schema(), snapshot_every=2)
    ctx = CommandContext("legacy", "test", idempotency_key="hire-1")
    await handlers.create_location(c.CreateLocation("1 Main St", "Springfield", "IL", "62701"),
                                   CommandContext("legacy", "test", idempotency_key="loc-1"))
    await handlers.create_employee(
        c.CreateEmployee("Ana", "Smith", dt.date(1990, 1, 2), "Cook", 1), ctx)
    await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(1, "Chef"),
                                             CommandContext("legacy", "test"))
    log = memory._log  # the test double's storage: the rows to copy
    assert log.snapshots, "the history must include a snapshot"
    rows = {
        legacy_schema.events: [
            {column.name: getattr(e, column.name) for column in legacy_schema.events.c}
            for e in log.events
        ],
        legacy_schema.streams: [
            {"stream_id": s, "category": split_stream_id(s)[0], "number": split_stream_id(s)[1],
             "version": v} for s, v in log.versions.items()
        ],
        legacy_schema.commands: [
            {"key": r.key, "command": r.command, "fingerprint": r.fingerprint,
             "result": r.result, "commit_position": r.commit_position,
             "recorded_at": log.command_times[r.key]} for r in log.commands.values()
        ],
        legacy_schema.snapshots: [
            {"stream_id": s.stream_id, "version": s.version, "state": s.state}
            for s in log.snapshots.values()
        ],
        legacy_schema.personal_data_keys: [
            {"stream_id": s, "key": k} for s, k in log.keys.items()
        ],
    }
    def store(conn: sa.Connection) -> None:
        legacy_schema.metadata.create_all(conn)
        for table, values in rows.items():
            conn.execute(table.insert(), values)

    await on(url, store)
    return memory


@pytest.mark.parametrize("kind", KINDS)
async def test_a_database_made_before_migrations_is_adopted_with_everything_in_it(
    kind: str, tmp_path: Path
) -> None:
    url = await empty_database(kind, tmp_path)
    before = await write_with_todays_code(url)
    if kind == "postgres":  # not migrated by the store: refused, with what to do
        with pytest.raises(SchemaOutOfDate, match=r"made before migrations.*python -m app migrate"):
            await SqlAlchemyEventStore.open(url, default_schema())
        assert await migrate(url) == (None, head())
    # (SQLite adopts it as it opens)

    store = await open_kind(kind, url)
    try:
        assert await schema_difference(url) == []
        assert await store.read_all(0, 100) == await before.read_all(0, 100)
        employee = next(e for e in await store.read_stream("employee-1")
                        if e.type == "EmployeeCreated")
        assert (employee.data["first_name"], employee.data["last_name"]) == ("Ana", "Smith")

        handlers = CommandHandlers(store, default_schema(), snapshot_every=2)
        retried = await handlers.create_employee(  # the old idempotency record still answers
            c.CreateEmployee("Ana", "Smith", dt.date(1990, 1, 2), "Cook", 1),
            CommandContext("again", "test", idempotency_key="hire-1"))
        assert retried.replayed and retried.entity_id == 1
        moved = await handlers.change_employee_job_title(
            c.ChangeEmployeeJobTitle(1, "Head Chef"), CommandContext("new", "test"))
        assert moved.position == await before.head_position() + 1
        assert handlers.repository.snapshot_loads == 1  # the old snapshot, of shape 1
        assert handlers.repository.stale_snapshots == 0
    finally:
        await store.close()
        await before.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_table_of_another_shape_stops_the_migration_and_nothing_is_written(
    kind: str, tmp_path: Path
) -> None:
    url = await empty_database(kind, tmp_path)
    await run(url, "CREATE TABLE snapshots (stream_id VARCHAR(200) PRIMARY KEY, body TEXT)")

    with pytest.raises(SchemaError, match="table 'snapshots' exists with columns"):
        await migrate(url)

    assert await table_names(url) == {"snapshots"}


@pytest.mark.postgres
async def test_postgres_at_an_older_or_unknown_revision_is_refused_until_migrated(
    tmp_path: Path
) -> None:
    url = await empty_database("postgres", tmp_path)
    with pytest.raises(SchemaOutOfDate, match="no event store schema"):
        await verify_schema(url)
    await at_first_revision(url)

    with pytest.raises(SchemaOutOfDate, match=rf"revision 0001.*needs {head()}"):
        await SqlAlchemyEventStore.open(url, default_schema())
    assert await migrate(url) == ("0001", head())
    await verify_schema(url)
    assert await schema_difference(url) == []

    await run(url, "UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(SchemaOutOfDate, match="f00d, unknown to this version"):
        await verify_schema(url)
    await run(url, f"UPDATE alembic_version SET version_num = '{head()}'")


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_migrations_started_together_upgrade_once(kind: str, tmp_path: Path) -> None:
    url = await empty_database(kind, tmp_path)

    outcomes = await asyncio.gather(*(migrate(url) for _ in range(4)))

    assert sorted(outcomes, key=lambda o: o[0] or "") == [(None, head())] + [(head(), head())] * 3
    assert await schema_difference(url) == []
