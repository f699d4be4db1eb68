"""Poison events: an event no projection can apply is parked with the rest of its stream, the
read model stays live for everything else, and a retry after the fix ends where a fresh rebuild
of the same log does, key for key. Over every store, on real Valkey and Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store.base import EventStore, NewEvent
from app.event_store.memory import _LOGS
from app.event_store.tables import events as events_table
from app.projector.loop import Projector
from app.projector.parked import ParkedEvents
from app.read_model.layout import Keys, document, history_entry
from app.service.handlers import CommandContext
from tests.conftest import StoreOpener, url_of
from tests.harness.projection_support import (
    Company,
    command_handlers,
    delete_all,
    dump,
    project_fully,
    workload,
)

SCHEMA = default_schema()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return await url_of(request.param, tmp_path)


@pytest.fixture
async def live(redis: Redis, keys: Keys) -> AsyncIterator[Keys]:
    """Generation 1 of the read model, the one queries read."""
    await redis.set(keys.generation_pointer, 1)
    await redis.set(keys.at(1).checkpoint, 0)
    yield keys.at(1)
    await delete_all(redis, keys.at(1))


@pytest.fixture
async def rebuilt(redis: Redis, keys: Keys) -> AsyncIterator[Keys]:
    """A read model of its own for a fresh projection of the whole log, to compare with."""
    spare = Keys(f"{keys.base}-rebuilt")
    yield spare
    await delete_all(redis, spare)


async def rewrite_row(url: str, position: int, data: dict[str, object] | None) -> None:
    """Fix a stored event's data in place (None: remove the row), as an operator would in SQL."""
    if url.startswith("memory://"):
        log = _LOGS[url.removeprefix("memory://")]
        at = next(i for i, e in enumerate(log.events) if e.position == position)
        if data is None:
            del log.events[at]
        else:
            log.events[at] = dataclasses.replace(log.events[at], data=data)
        return
    engine = create_async_engine(url)
    where = events_table.c.position == position
    async with engine.begin() as conn:
        await conn.execute(sa.delete(events_table).where(where) if data is None
                           else sa.update(events_table).where(where).values(data=data))
    await engine.dispose()


async def plant(store: EventStore, employee_id: int, *changes: str | Move | None) -> list[int]:
    """Commits appended straight to the employee's stream: a job title change (None: one
    without its title, which no projection can apply) or a move; their positions."""
    stream = f"employee-{employee_id}"
    positions = []
    for change in changes:
        version = (await store.stream_versions([stream]))[stream]
        data: dict[str, object] = {"employee_id": employee_id}
        if isinstance(change, Move):
            moved = [NewEvent(stream, "EmployeeRemovedFromLocation",
                              {**data, "location_id": change.origin}),
                     NewEvent(stream, "EmployeeAssignedToLocation",
                              {**data, "location_id": change.to})]
        else:
            if change is not None:
                data["job_title"] = change
            moved = [NewEvent(stream, "EmployeeJobTitleChanged", data)]
        appended = await store.append(moved, {stream: version})
        positions += range(appended.first_position, appended.last_position + 1)
    return positions


async def append(store: EventStore, stream: str, *events: tuple[str, dict[str, object]]) -> int:
    """One commit of `events` (type, data, in their type's current shape) at the end of
    `stream`; its last position."""
    version = (await store.stream_versions([stream])).get(stream, 0)
    appended = await store.append(
        [NewEvent(stream, kind, data, SCHEMA.version_of(kind)) for kind, data in events],
        {stream: version},
    )
    return appended.last_position


@dataclasses.dataclass(frozen=True)
class Move:
    origin: int
    to: int


async def employee_doc(redis: Redis, keys: Keys, employee_id: int) -> dict[str, object] | None:
    return document(await redis.get(keys.employee(employee_id)))


async def assert_live(redis: Redis, keys: Keys, company: Company, but: int) -> None:
    """Every employee except `but` is as the commands left it."""
    for employee_id, location_id in company.employees.items():
        if employee_id == but:
            continue
        doc = await employee_doc(redis, keys, employee_id)
        assert doc is not None
        assert (doc["location_id"], doc["job_title"]) == (
            location_id, company.titles[employee_id])
        location = document(await redis.get(keys.location(location_id)))
        assert location is not None and employee_id in location["employee_ids"]


@pytest.mark.parametrize("fix", ["rewrite", "remove"])
async def test_a_poison_event_parks_its_stream_and_a_retry_after_the_fix_equals_a_rebuild(
    store: EventStore, open_same: StoreOpener, store_url: str, redis: Redis, live: Keys,
    rebuilt: Keys, fix: str,
) -> None:
    handlers = command_handlers(store)
    company = await workload(handlers, seed=7, events=120)
    victim = min(company.employees)
    before = company.titles.pop(victim)
    origin = company.employees.pop(victim)  # its stream is written directly from now on
    to = min(company.locations - {origin})
    poison, *after = await plant(store, victim, None, "Sous Chef", Move(origin, to), "Head Chef")
    company = await workload(handlers, seed=8, events=240, company=company)

    projector = Projector(store, redis, live, batch_size=40)
    await projector.catch_up()
    assert projector.position == await store.head_position()  # nothing stopped it
    parked = ParkedEvents(store, redis, live)
    assert [(p.stream_id, p.positions) for p in await parked.streams()] == [
        (f"employee-{victim}", [poison, *after])]
    frozen = await employee_doc(redis, live, victim)
    assert frozen is not None and frozen["job_title"] == before
    await assert_live(redis, live, company, but=victim)

    # the projection still cannot apply it: a retry changes nothing
    untouched = await dump(redis, live)
    outcome = await parked.retry()
    assert (outcome.applied, outcome.dropped) == (0, 0) and len(outcome.parked) == 1
    assert await dump(redis, live) == untouched

    # the stream stays parked in order, also for a projector that starts afresh
    later = await plant(store, victim, "Chef de Cuisine")
    company = await workload(handlers, seed=9, events=300, company=company)
    await Projector(store, redis, live, batch_size=40).catch_up()
    assert [p.positions for p in await parked.streams()] == [[poison, *after, *later]]
    await assert_live(redis, live, company, but=victim)

    await rewrite_row(store_url, poison,
                      {"employee_id": victim, "job_title": "Fixed"} if fix == "rewrite" else None)
    fixed = await open_same()  # as `python -m app parked retry` would: its own connection
    outcome = await ParkedEvents(fixed, redis, live).retry()
    removed = 1 if fix == "remove" else 0
    assert (outcome.applied, outcome.dropped, outcome.parked) == (6 - removed, removed, [])
    doc = await employee_doc(redis, live, victim)
    assert doc is not None and (doc["job_title"], doc["location_id"]) == ("Chef de Cuisine", to)

    await project_fully(fixed, redis, rebuilt)
    assert await dump(redis, live) == await dump(redis, rebuilt)

    # and the live projector goes on from there, exactly once
    company = await workload(handlers, seed=10, events=340, company=company)
    await Projector(fixed, redis, live, batch_size=40).catch_up()
    await Projector(fixed, redis, rebuilt, batch_size=40).catch_up()
    assert await dump(redis, live) == await dump(redis, rebuilt)
    await assert_live(redis, live, company, but=victim)


async def test_a_parked_location_holds_back_the_hires_into_it_until_retried(
    store: EventStore, open_same: StoreOpener, store_url: str, redis: Redis, live: Keys,
    rebuilt: Keys,
) -> None:
    handlers = command_handlers(store)
    company = await workload(handlers, seed=11, events=60)
    address = {"location_id": 90, "street_address": "9 Main St", "state": "IL",
               "postal_code": "62709"}
    poison = await append(store, "location-90", ("LocationCreated", address))  # no city
    for employee_id in (900, 901):
        await append(store, f"employee-{employee_id}", *(
            ("EmployeeCreated", {"employee_id": employee_id, "first_name": "Ana",
                                 "last_name": "Smith", "date_of_birth": "1990-01-01",
                                 "job_title": "Cook"}),
            ("EmployeeAssignedToLocation", {"employee_id": employee_id, "location_id": 90}),
        ))
    company = await workload(handlers, seed=12, events=120, company=company)
    elsewhere = min(company.locations)
    await append(store, "employee-900",
                 ("EmployeeRemovedFromLocation", {"employee_id": 900, "location_id": 90}),
                 ("EmployeeAssignedToLocation", {"employee_id": 900, "location_id": elsewhere}))
    company = await workload(handlers, seed=13, events=180, company=company)

    await Projector(store, redis, live, batch_size=40).catch_up()
    parked = ParkedEvents(store, redis, live)
    assert [p.stream_id for p in await parked.streams()] == [
        "location-90", "employee-900", "employee-901"]
    assert await employee_doc(redis, live, 900) is None
    await assert_live(redis, live, company, but=0)

    await rewrite_row(store_url, poison, {**address, "city": "Springfield"})
    fixed = await open_same()  # its own connection, and none of the first one's memory
    outcome = await ParkedEvents(fixed, redis, live).retry()
    assert (outcome.applied, outcome.parked) == (7, [])
    location = document(await redis.get(live.location(elsewhere)))
    assert location is not None and 900 in location["employee_ids"]
    await project_fully(fixed, redis, rebuilt)
    assert await dump(redis, live) == await dump(redis, rebuilt)


async def test_an_erasure_parked_with_its_stream_is_applied_by_the_retry_as_a_rebuild_would(
    store: EventStore, open_same: StoreOpener, store_url: str, redis: Redis, live: Keys,
    rebuilt: Keys,
) -> None:
    """The erasure waits with its parked stream (the employee keeps its last projected state);
    the retry applies it and rewrites every time-travel version, earlier ones too."""
    company = await workload(command_handlers(store), seed=21, events=60)
    victim = min(company.employees)
    await Projector(store, redis, live, batch_size=40).catch_up()
    poison, = await plant(store, victim, None)
    await Projector(store, redis, live, batch_size=40).catch_up()
    await rewrite_row(store_url, poison, {"employee_id": victim, "job_title": "Fixed"})
    fixed = await open_same()  # the write side reads the fixed row; the read model still parks
    await command_handlers(fixed).forget_employee(c.ForgetEmployee(victim), CommandContext("t"))
    erasure = await fixed.head_position()
    await Projector(fixed, redis, live, batch_size=40).catch_up()
    parked = ParkedEvents(fixed, redis, live)
    assert [(p.stream_id, p.positions) for p in await parked.streams()] == [
        (f"employee-{victim}", [poison, erasure])]
    waiting = await employee_doc(redis, live, victim)
    assert waiting is not None and waiting["personal_data_erased"] is False
    assert waiting["first_name"] is not None

    outcome = await parked.retry()
    assert (outcome.applied, outcome.parked) == (2, [])
    doc = await employee_doc(redis, live, victim)
    assert doc is not None and doc["personal_data_erased"] is True
    assert (doc["first_name"], doc["last_name"], doc["job_title"]) == (None, None, "Fixed")
    versions = [history_entry(m) for m in
                await redis.zrange(live.history(("employee", victim)), 0, -1)]
    assert len(versions) >= 3  # hired, and more than the retried commits
    assert all(v is None or (v["first_name"], v["date_of_birth"]) == (None, None)
               for _, v in versions)
    await project_fully(fixed, redis, rebuilt)
    assert await dump(redis, live) == await dump(redis, rebuilt)


async def test_an_event_its_upcasters_cannot_read_is_parked_and_the_rest_stays_live(
    store: EventStore, redis: Redis, live: Keys, caplog: pytest.LogCaptureFixture,
) -> None:
    # given a location stored as an older release wrote it (v1), but without the field its
    # upcaster needs (a row shaped wrongly), among an ordinary history
    handlers = command_handlers(store)
    company = await workload(handlers, seed=21, events=60)
    stream = "location-900"
    await store.append([NewEvent(stream, "LocationCreated", {"location_id": 900}, 1)],
                       {stream: 0})
    company = await workload(handlers, seed=22, events=140, company=company)

    # when the projector catches up
    projector = Projector(store, redis, live, batch_size=25)
    await projector.catch_up()

    # then that event is parked, read as stored, and everything else is projected
    assert projector.position == await store.head_position()
    parked = await ParkedEvents(store, redis, live).streams()
    assert [p.stream_id for p in parked] == [stream]
    assert document(await redis.get(live.location(900))) is None
    await assert_live(redis, live, company, but=0)
    stored = [e for e in await store.read_stream(stream)]
    assert [(e.schema_version, e.data) for e in stored] == [(1, {"location_id": 900})]
    assert "could not be upcast (KeyError)" in caplog.text
