"""Erasure of personal data (DESIGN §7.1) in the event store, the command handlers and the
projector: sealed at rest with a key per employee, unreadable once the key is destroyed, plaintext
rows of older releases masked in place, and every stored version of the employee rewritten."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store import open_store
from app.event_store.base import EventStore, NewEvent, Snapshot
from app.event_store.memory import MemoryEventStore
from app.event_store.tables import events as events_table
from app.event_store.tables import personal_data_keys, streams
from app.projector.generations import Generations
from app.projector.loop import Projector
from app.read_model.layout import Keys
from app.read_model.redis import ReadModel
from app.service.handlers import CommandContext, CommandHandlers
from tests.conftest import SQL_STORES, url_of

MARK = "Zqxmarker"
CTX = CommandContext("t")


def hired(employee_id: int, first: str, last: str, version: int = 3) -> NewEvent:
    return NewEvent(f"employee-{employee_id}", "EmployeeCreated", {
        "employee_id": employee_id, "first_name": first, "last_name": last,
        "date_of_birth": "1990-05-17", "job_title": "Cook",
    }, schema_version=version)


def erasure(employee_id: int) -> NewEvent:
    return NewEvent(f"employee-{employee_id}", "EmployeePersonalDataErased",
                    {"employee_id": employee_id})


async def stored_text(store: EventStore, url: str) -> str:
    """Everything the store holds in its tables, as text (what a file scan could find)."""
    if isinstance(store, MemoryEventStore):
        log = store._log  # the test double's storage is the thing checked
        return repr((log.events, log.snapshots, log.keys))
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = [repr((await conn.execute(sa.select(table))).all())
                    for table in (events_table, personal_data_keys)]
            rows.append(repr((await conn.execute(sa.text("SELECT * FROM snapshots"))).all()))
    finally:
        await engine.dispose()
    return "".join(rows)


@pytest.fixture(params=["memory", *SQL_STORES])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await url_of(request.param, tmp_path)


async def test_personal_fields_are_sealed_at_rest_and_gone_once_the_key_is(
    store: EventStore, store_url: str
) -> None:
    await store.append([hired(1, MARK + "First", MARK + "Last")], {"employee-1": 0})
    await store.append([hired(2, "Control", "Person")], {"employee-2": 0})
    await store.save_snapshot(Snapshot("employee-1", 1, {"note": MARK + "Snap"}))
    assert (await store.read_stream("employee-1"))[0].data["first_name"] == MARK + "First"
    at_rest = await stored_text(store, store_url)
    assert MARK not in at_rest.replace(MARK + "Snap", "")  # sealed: neither names nor birth
    assert "Control" not in at_rest

    key = await stored_key(store_url, "employee-1")
    await store.append([erasure(1)], {"employee-1": 1})

    for read in (await store.read_all(), await store.read_stream("employee-1"),
                 await store.read_batch(0, 10)):
        first = next(e for e in read if e.stream_id == "employee-1")
        assert (first.data["first_name"], first.data["last_name"],
                first.data["date_of_birth"]) == (None, None, None)
        assert first.data["job_title"] == "Cook" and "sealed" not in first.data
    control = (await store.read_stream("employee-2"))[0].data
    assert (control["first_name"], control["last_name"]) == ("Control", "Person")
    assert await store.load_snapshot("employee-1") is None
    assert MARK not in await stored_text(store, store_url)
    if store_url.startswith("sqlite"):  # secure_delete and the WAL checkpoint: not on disk
        assert key is not None
        assert files_holding(Path(store_url.split("///", 1)[1]).parent, key) == []


def files_holding(directory: Path, text: str) -> list[str]:
    """The files in `directory` (the database, its WAL) holding `text`'s bytes."""
    return [f.name for f in directory.iterdir() if f.is_file() and text.encode() in f.read_bytes()]


async def stored_key(url: str, stream_id: str) -> str | None:
    """The personal-data key a SQL store holds for `stream_id` (None: memory, or none)."""
    if url.startswith("memory://"):
        return None
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(sa.select(personal_data_keys.c.key).where(
                personal_data_keys.c.stream_id == stream_id))).scalar()
    finally:
        await engine.dispose()
    assert found is not None
    return str(found)


@pytest.mark.parametrize("kind", SQL_STORES)
async def test_plaintext_rows_of_an_older_release_are_masked_in_place(
    kind: str, tmp_path: Path
) -> None:
    """Rows stored before sealing existed (v1 and v2 EmployeeCreated, plaintext) are erasable:
    exactly their personal fields are nulled in place and the row is marked `erased`."""
    url = await url_of(kind, tmp_path)
    store = await open_store(url, default_schema(), direct=kind != "sqlite-aiosqlite")
    outside = create_async_engine(url)
    now = dt.datetime.now(dt.UTC)
    try:
        async with outside.begin() as conn:
            for position, (employee_id, version, born) in enumerate(
                [(1, 1, "1990-05-17T00:00:00"), (2, 2, "1991-01-02")], start=1
            ):
                data = {"employee_id": employee_id, "first_name": f"{MARK}{employee_id}",
                        "last_name": "Old", "date_of_birth": born, "job_title": "Cook"}
                await conn.execute(events_table.insert().values(
                    position=position, stream_id=f"employee-{employee_id}", version=1,
                    type="EmployeeCreated", schema_version=version, data=data,
                    metadata={"actor": "old"}, commit_position=position, recorded_at=now,
                ))
                await conn.execute(streams.insert().values(
                    stream_id=f"employee-{employee_id}", category="employee",
                    number=employee_id, version=1,
                ))
        assert (await store.read_stream("employee-1"))[0].data["date_of_birth"] == "1990-05-17"

        await store.append([erasure(1)], {"employee-1": 1})

        old = (await store.read_stream("employee-1"))[0]
        assert (old.data["first_name"], old.data["last_name"], old.data["date_of_birth"]) == (
            None, None, None)
        assert (old.data["job_title"], old.metadata) == ("Cook", {"actor": "old",
                                                                  "erased": True})
        kept = (await store.read_stream("employee-2"))[0]
        assert kept.data["first_name"] == f"{MARK}2" and "erased" not in kept.metadata
        assert f"{MARK}1" not in await stored_text(store, url)
        if kind.startswith("sqlite"):  # nor in the file's freed space or its WAL
            assert files_holding(tmp_path, f"{MARK}1") == []
    finally:
        await store.close()
        await outside.dispose()


async def test_forgetting_is_idempotent_and_works_for_terminated_employees(
    store: EventStore,
) -> None:
    handlers = CommandHandlers(store, default_schema(), snapshot_every=2)
    await handlers.create_location(c.CreateLocation("1 Main", "X", "Y", "1"), CTX)
    for _ in range(2):
        await handlers.create_employee(
            c.CreateEmployee(MARK, MARK, dt.date(1990, 1, 1), "Cook", 1), CTX)
    await handlers.terminate_employee(c.TerminateEmployee(2), CTX)
    head = await store.head_position()

    first = await handlers.forget_employee(c.ForgetEmployee(1), CTX)
    again = await handlers.forget_employee(c.ForgetEmployee(1), CTX)
    fresh = CommandHandlers(store, default_schema())  # no cache: decided from the log
    third = await fresh.forget_employee(c.ForgetEmployee(1), CTX)
    gone = await handlers.forget_employee(c.ForgetEmployee(2), CTX)

    assert first.position == again.position == third.position == head + 1
    assert (again.replayed, third.replayed) == (True, True)
    assert gone.position == head + 2 == await store.head_position()
    with pytest.raises(Exception, match="Employee"):
        await handlers.forget_employee(c.ForgetEmployee(99), CTX)
    moved = await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(1, "Chef"), CTX)
    assert moved.position == head + 3  # an erased employee stays employed


async def test_the_projector_rewrites_every_version_and_a_rebuild_agrees(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    handlers = CommandHandlers(store, default_schema())
    projector = Projector(store, redis, keys, batch_size=2)
    await handlers.create_location(c.CreateLocation("1 Main", "X", "Y", "1"), CTX)
    await handlers.create_location(c.CreateLocation("2 Main", "X", "Y", "2"), CTX)
    for first, last in ((MARK, MARK), (MARK, MARK), ("Control", "Keep")):
        await handlers.create_employee(
            c.CreateEmployee(first, last, dt.date(1990, 1, 1), "Cook", 1), CTX)
    await projector.catch_up()  # the hires are in Redis in the clear
    await handlers.assign_employee_to_location(c.AssignEmployeeToLocation(1, 2), CTX)
    await handlers.terminate_employee(c.TerminateEmployee(2), CTX)
    await handlers.forget_employee(c.ForgetEmployee(1), CTX)
    await handlers.forget_employee(c.ForgetEmployee(2), CTX)
    await projector.catch_up()

    live = await dump_values(redis, keys)
    assert MARK not in live
    read_model = ReadModel(redis, keys)
    erased, control = await read_model.employees([1, 3])
    assert erased is not None and control is not None
    assert (erased["first_name"], erased["personal_data_erased"], erased["location_id"]) == (
        None, True, 2)
    assert (control["first_name"], control["personal_data_erased"]) == ("Control", False)

    rebuilt = Keys(keys.base + "-rebuilt")
    try:
        await Projector(store, redis, rebuilt, batch_size=3).catch_up()
        assert await dump_values(redis, rebuilt) == live
    finally:
        async for key in redis.scan_iter(match=rebuilt.pattern()):
            await redis.delete(key)


async def dump_values(redis: Redis, keys: Keys) -> str:
    """Every document and history member of a read model, by key suffix (text to compare)."""
    out: dict[str, Any] = {}
    async for key in redis.scan_iter(match=keys.pattern()):
        kind = await redis.type(key)
        suffix = key.removeprefix(keys.prefix)
        if kind == "string":
            out[suffix] = await redis.get(key)
        elif kind == "zset":
            out[suffix] = await redis.zrange(key, 0, -1, withscores=True)
    return repr(sorted(out.items()))


async def test_a_rebuild_that_applies_an_erasure_tells_the_erasure_listeners_once(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    """After a rebuild the embedded Valkey's file is rewritten once (app/bootstrap.py): an
    erasure committed while the new generation was filling may have met its hire in the clear."""
    handlers = CommandHandlers(store, default_schema())
    await handlers.create_location(c.CreateLocation("1 Main", "X", "Y", "1"), CTX)
    for employee_id in (1, 2):  # two erasures, in batches of their own
        await handlers.create_employee(
            c.CreateEmployee(MARK, MARK, dt.date(1990, 1, 1), "Cook", 1, employee_id), CTX)
        await handlers.forget_employee(c.ForgetEmployee(employee_id), CTX)
    told: list[int] = []

    async def listener() -> None:
        told.append(1)

    generations = Generations(store, redis, keys, batch_size=1)
    generations.on_erasure(listener)
    await generations.rebuild("test")
    assert told == [1]


async def test_a_later_sealed_event_takes_its_streams_key_and_an_erased_stream_a_new_one(
    store: EventStore, store_url: str
) -> None:
    """Another process's store (which never saw the stream) seals under the stored key; after
    the erasure destroyed it, a new sealed event gets a new key and the old rows stay shut."""
    other = await open_store(store_url, default_schema())
    try:
        await store.append([hired(1, "Ana", "First")], {"employee-1": 0})
        key = await stored_key(store_url, "employee-1")
        await other.append([hired(1, "Ana", "Second")], {"employee-1": 1})
        assert await stored_key(store_url, "employee-1") == key
        assert [e.data["last_name"] for e in await store.read_stream("employee-1")] == [
            "First", "Second"]
        await other.append([erasure(1)], {"employee-1": 2})
        await store.append([hired(1, "Ana", "Third")], {"employee-1": 3})
        read = await other.read_stream("employee-1")
        assert [e.data.get("last_name") for e in read] == [None, None, None, "Third"]
        if key is not None:
            assert await stored_key(store_url, "employee-1") not in (None, key)
    finally:
        await other.close()
