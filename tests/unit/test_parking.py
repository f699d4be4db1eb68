"""The pure side of poison events: which commits a batch parks, and what it leaves applied."""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.event_store.base import RecordedEvent
from app.projections import batch

AT = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)


def event(position: int, stream: str, kind: str, commit: int | None = None,
          **data: Any) -> RecordedEvent:
    version = position  # versions only need to grow within a stream here
    shape = batch.CURRENT.get(kind, 1)  # as a store reads it: in its type's current shape
    return RecordedEvent(position, stream, version, kind, shape, data, {}, AT, commit or position)


def hire(position: int, employee: int, location: int) -> list[RecordedEvent]:
    stream = f"employee-{employee}"
    return [
        event(position, stream, "EmployeeCreated", position + 1, employee_id=employee,
              first_name="Ana", last_name="Smith", date_of_birth="1990-01-01", job_title="Cook"),
        event(position + 1, stream, "EmployeeAssignedToLocation", employee_id=employee,
              location_id=location),
    ]


def test_a_commit_that_cannot_be_applied_is_parked_whole_with_the_rest_of_its_stream() -> None:
    log = [
        event(1, "location-1", "LocationCreated", location_id=1, street_address="1 Main St",
              city="Springfield", state="IL", postal_code="62701"),
        *hire(2, 1, 1),
        # a hire whose assignment has no location id: its creation is not applied either
        event(4, "employee-2", "EmployeeCreated", 5, employee_id=2, first_name="Ben",
              last_name="Kim", date_of_birth="1991-02-02", job_title="Host"),
        event(5, "employee-2", "EmployeeAssignedToLocation", employee_id=2),
        *hire(6, 3, 1),
        event(8, "employee-2", "EmployeeJobTitleChanged", employee_id=2, job_title="Chef"),
        event(9, "employee-3", "EmployeeNicknameGiven", employee_id=3, nickname="Chip"),
        event(10, "employee-1", "EmployeeJobTitleChanged", employee_id=1, job_title="Chef"),
    ]
    parked: set[str] = set()
    result = batch.apply(batch.decode(log), {}, parked)

    assert parked == {"employee-2", "employee-3"}
    assert [(p.event.position, p.reason) for p in result.parked] == [
        (4, "KeyError"), (5, "KeyError"), (8, batch.BEHIND_PARKED),
        (9, "UnknownEventType"),
    ]
    assert result.docs[("employee", 2)] is None
    assert result.docs[("location", 1)]["employee_ids"] == [1, 3]  # type: ignore[index]
    assert result.docs[("employee", 1)]["job_title"] == "Chef"  # type: ignore[index]
    assert {(c.position, c.entity, c.entity_id) for c in result.changes} == {
        (1, "location", 1), (3, "employee", 1), (3, "location", 1), (7, "employee", 3),
        (7, "location", 1), (10, "employee", 1),
    }


def test_a_parked_stream_stays_parked_in_the_next_batch() -> None:
    parked = {"employee-1"}
    result = batch.apply(batch.decode([
        event(11, "employee-1", "EmployeeJobTitleChanged", employee_id=1, job_title="Chef"),
    ]), {("employee", 1): {"id": 1, "job_title": "Cook"}}, parked)
    assert [p.reason for p in result.parked] == [batch.BEHIND_PARKED]
    assert result.docs[("employee", 1)] == {"id": 1, "job_title": "Cook"} and not result.changes


def test_a_commit_changing_a_document_of_a_parked_stream_waits_with_its_own_stream() -> None:
    """A hire into a location whose creation is parked cannot be applied before it."""
    log = [
        event(1, "location-1", "LocationCreated", location_id=1, street_address="1 Main St",
              city="Springfield", state="IL", postal_code="62701"),
        event(2, "location-2", "LocationCreated", location_id=2, street_address="2 Main St",
              state="IL", postal_code="62702"),  # no city
        *hire(3, 5, 2),
        *hire(5, 6, 1),
        event(7, "employee-5", "EmployeeJobTitleChanged", employee_id=5, job_title="Chef"),
    ]
    parked: set[str] = set()
    result = batch.apply(batch.decode(log), {}, parked)
    assert parked == {"location-2", "employee-5"}
    assert [p.event.position for p in result.parked] == [2, 3, 4, 7]
    assert result.docs[("location", 1)]["employee_ids"] == [6]  # type: ignore[index]
    assert result.docs.get(("employee", 5)) is None
