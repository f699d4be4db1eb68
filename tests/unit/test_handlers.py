"""Command handlers: atomic appends, retries, ids, idempotency, snapshots.

Here on the in-memory store (it passes the event-store contract suite, so the handlers see what
they would see on any store); tests/integration/test_handlers.py runs the same scenarios over
every SQL store."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

import pytest

from app.domain import commands as c
from app.domain.errors import Conflict, NotFound, RuleViolation, ValidationFailed
from app.domain.schema import default_schema
from app.event_store.base import EventStore
from app.service.handlers import (
    CommandContext,
    CommandHandlers,
    CommandResult,
    IdempotencyKeyReused,
)
from app.service.repository import Repository

CTX = CommandContext(correlation_id="test")


@pytest.fixture
def store_url() -> str:
    """The in-memory store (tests/conftest.py's `store` opens it)."""
    return f"memory://{uuid.uuid4().hex}"


def place(n: int | None = None) -> c.CreateLocation:
    return c.CreateLocation("1 Main St", "Springfield", "IL", "62701", n)


def person(location_id: int, n: int | None = None) -> c.CreateEmployee:
    return c.CreateEmployee("Ana", "Smith", dt.date(1990, 1, 1), "Cook", location_id, n)


@pytest.fixture
def handlers(store: EventStore) -> CommandHandlers:
    return CommandHandlers(store, default_schema(), snapshot_every=50)


async def test_hiring_writes_created_and_assigned_in_one_commit(
    handlers: CommandHandlers, store: EventStore
) -> None:
    await handlers.create_location(place(1), CTX)
    hired = await handlers.create_employee(person(1, 5), CTX)
    log = await store.read_all()
    assert [(e.type, e.commit_position) for e in log[1:]] == [
        ("EmployeeCreated", 3), ("EmployeeAssignedToLocation", 3),
    ]
    assert hired.position == 3 and hired.entity_id == 5
    assert log[1].metadata["correlation_id"] == "test"
    assert log[1].metadata["causation_id"] == log[2].metadata["causation_id"]


async def test_omitted_ids_are_assigned_without_gaps_under_concurrency(
    handlers: CommandHandlers, store: EventStore
) -> None:
    other_process = CommandHandlers(store, default_schema())
    with pytest.raises(ValidationFailed):
        await handlers.create_location(c.CreateLocation("", "", "", ""), CTX)
    made = await asyncio.gather(
        *(h.create_location(place(), CTX) for h in [handlers, other_process] * 10)
    )
    assert sorted(m.entity_id for m in made) == list(range(1, 21))
    with pytest.raises(NotFound):
        await handlers.create_employee(person(99), CTX)
    assert (await handlers.create_employee(person(1), CTX)).entity_id == 1


async def test_concurrent_moves_retry_and_keep_one_location(
    handlers: CommandHandlers, store: EventStore
) -> None:
    for n in (1, 2, 3):
        await handlers.create_location(place(n), CTX)
    await handlers.create_employee(person(1, 1), CTX)
    replicas = [handlers, CommandHandlers(store, default_schema())]

    async def move(i: int) -> str:
        try:
            await replicas[i % 2].assign_employee_to_location(
                c.AssignEmployeeToLocation(1, 1 + i % 3), CTX
            )
        except RuleViolation:
            return "already there"
        return "moved"

    outcomes = await asyncio.gather(*(move(i) for i in range(20)))
    assert "moved" in outcomes
    employee = await Repository(store).employee(1)
    assert employee is not None
    events = await store.read_stream("employee-1")
    located: int | None = None
    for event in events:
        if event.type == "EmployeeAssignedToLocation":
            assert located is None, "assigned while still at another location"
            located = event.data["location_id"]
        elif event.type == "EmployeeRemovedFromLocation":
            assert event.data["location_id"] == located
            located = None
    assert located == employee.location_id


async def test_a_client_expected_version_conflicts_at_once(handlers: CommandHandlers) -> None:
    await handlers.create_location(place(1), CTX)
    await handlers.create_employee(person(1, 1), CTX)
    with pytest.raises(Conflict) as raised:
        await handlers.change_employee_job_title(
            c.ChangeEmployeeJobTitle(1, "Chef", expected_version=1), CTX
        )
    assert (raised.value.expected, raised.value.actual) == (1, 2)
    done = await handlers.change_employee_job_title(
        c.ChangeEmployeeJobTitle(1, "Chef", expected_version=2), CTX
    )
    assert done.position == 4


async def test_an_idempotent_retry_returns_the_first_result_and_writes_nothing(
    handlers: CommandHandlers, store: EventStore
) -> None:
    keyed = CommandContext("test", idempotency_key="create-downtown")
    first = await handlers.create_location(place(), keyed)
    again = await handlers.create_location(place(), keyed)
    assert (again.entity_id, again.position, again.replayed) == (first.entity_id, 1, True)
    assert await store.head_position() == 1
    with pytest.raises(IdempotencyKeyReused):
        await handlers.create_location(place(7), keyed)


async def test_concurrent_retries_with_one_key_write_once(
    handlers: CommandHandlers, store: EventStore
) -> None:
    keyed = CommandContext("test", idempotency_key="k")
    results = await asyncio.gather(
        *(h.create_location(place(), keyed)
          for h in [handlers, CommandHandlers(store, default_schema())] * 3)
    )
    assert {r.position for r in results} == {1}
    assert await store.head_position() == 1


async def test_long_streams_load_from_a_snapshot(
    handlers: CommandHandlers, store: EventStore
) -> None:
    await handlers.create_location(place(1), CTX)
    await handlers.create_employee(person(1, 1), CTX)
    for n in range(120):
        await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(1, f"Title {n}"), CTX)
    snapshot = await store.load_snapshot("employee-1")
    assert snapshot is not None and snapshot.version >= 100
    from_snapshot = await Repository(store, snapshot_every=50).employee(1)
    replayed = await Repository(store, snapshot_every=10**9).employee(1)
    assert from_snapshot == replayed
    assert replayed is not None and replayed.job_title == "Title 119" and replayed.version == 122


async def test_terminated_employees_cannot_be_moved(handlers: CommandHandlers) -> None:
    await handlers.create_location(place(1), CTX)
    await handlers.create_location(place(2), CTX)
    await handlers.create_employee(person(1, 1), CTX)
    await handlers.terminate_employee(c.TerminateEmployee(1), CTX)
    with pytest.raises(NotFound):
        await handlers.assign_employee_to_location(c.AssignEmployeeToLocation(1, 2), CTX)


async def test_simultaneous_twins_with_one_key_both_get_the_original_result(
    handlers: CommandHandlers, store: EventStore
) -> None:
    """A retry racing its original (on another replica) never sees the original's own write as
    a refusal: 400 twin pairs of hires with ids, then of moves, each get one result."""
    other_replica = CommandHandlers(store, default_schema())
    pairs = 400
    for n in (1, 2):
        await handlers.create_location(place(n), CTX)

    async def twins(send: Callable[[CommandHandlers, CommandContext], Awaitable[CommandResult]],
                    key: str) -> tuple[CommandResult, CommandResult]:
        ctx = CommandContext("test", idempotency_key=key)
        first, second = await asyncio.gather(send(handlers, ctx), send(other_replica, ctx))
        return first, second

    def hire(n: int) -> Callable[[CommandHandlers, CommandContext], Awaitable[CommandResult]]:
        return lambda h, ctx: h.create_employee(person(1, n), ctx)

    def move(n: int) -> Callable[[CommandHandlers, CommandContext], Awaitable[CommandResult]]:
        return lambda h, ctx: h.assign_employee_to_location(c.AssignEmployeeToLocation(n, 2), ctx)

    for send, kind in ((hire, "hire"), (move, "move")):
        results = await asyncio.gather(
            *(twins(send(n), f"{kind}-{n}") for n in range(1, pairs + 1))
        )
        for n, (first, second) in enumerate(results, start=1):
            assert (first.entity, first.entity_id, first.position) == (
                second.entity, second.entity_id, second.position), (kind, n)
            assert first.entity_id == n and sorted([first.replayed, second.replayed]) == [
                False, True]
    log = await store.read_all(limit=10 * pairs)
    assert len(log) == 2 + 2 * pairs + 2 * pairs  # every command written exactly once
