"""Snapshots of aggregates on every SQL store: one of another shape than the aggregate's now is
ignored (the stream is replayed) and replaced, never loaded into the wrong fields."""

from __future__ import annotations

from app.domain import commands as c
from app.domain.model import Employee
from app.domain.schema import default_schema
from app.event_store.base import EventStore, Snapshot
from app.service.handlers import CommandContext, CommandHandlers
from app.service.repository import SNAPSHOT_VERSIONS, Repository
from tests.unit.test_handlers import person, place


async def test_a_snapshot_of_another_shape_is_ignored_and_replaced(store: EventStore) -> None:
    handlers = CommandHandlers(store, default_schema(), snapshot_every=2)
    ctx = CommandContext("snapshots")
    await handlers.create_location(place(1), ctx)
    await handlers.create_employee(person(1), ctx)
    for title in ("Chef", "Head Chef", "Owner"):
        await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(1, title), ctx)
    current = SNAPSHOT_VERSIONS[Employee]
    written = await store.load_snapshot("employee-1")
    assert written is not None and written.schema_version == current
    expected = await Repository(store, snapshot_every=2).employee(1)
    assert expected is not None and expected.job_title == "Owner"
    # a later shape's snapshot, at the newest version: these fields do not make an Employee
    await store.save_snapshot(Snapshot(
        "employee-1", expected.version, {"employee_id": 1, "title": "Cook", "version": 99},
        schema_version=current + 1))

    repository = Repository(store, snapshot_every=2)
    assert await repository.employee(1) == expected

    assert (repository.stale_snapshots, repository.snapshot_loads) == (1, 0)
    assert repository.events_replayed == expected.version
    replaced = await store.load_snapshot("employee-1")
    assert replaced is not None
    assert (replaced.schema_version, replaced.version) == (current, expected.version)
    again = Repository(store, snapshot_every=2)
    assert await again.employee(1) == expected
    assert (again.stale_snapshots, again.snapshot_loads, again.events_replayed) == (0, 1, 0)
