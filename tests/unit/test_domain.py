"""Domain scenarios: given past events, when a command is decided, then new events or an error."""

from __future__ import annotations

import datetime as dt
import sys
import unicodedata

import pytest

from app.domain import commands as c
from app.domain import events as e
from app.domain import model
from app.domain.errors import AlreadyExists, Conflict, NotFound, RuleViolation, ValidationFailed
from app.domain.schema import default_schema, from_data, to_data
from app.domain.validation import CONTROL, sixteen_years_before

TODAY = dt.date(2026, 11, 26)
ADULT = dt.date(1990, 5, 17)


def location(*history: e.DomainEvent) -> model.Location | None:
    state: model.Location | None = None
    for event in history:
        state = model.evolve_location(state, event)
    return state


def employee(*history: e.DomainEvent) -> model.Employee | None:
    state: model.Employee | None = None
    for event in history:
        state = model.evolve_employee(state, event)
    return state


DOWNTOWN = e.LocationCreated(1, "1 Main St", "Springfield", "IL", "62701")
UPTOWN = e.LocationCreated(2, "9 Elm St", "Springfield", "IL", "62702")
HIRED = (e.EmployeeCreated(7, "Ana", "Smith", ADULT, "Cook"), e.EmployeeAssignedToLocation(7, 1))


def hire(**changes: object) -> c.CreateEmployee:
    fields: dict[str, object] = {
        "first_name": "Ana", "last_name": "Smith", "date_of_birth": ADULT,
        "job_title": "Cook", "location_id": 1, "employee_id": 7,
    }
    fields.update(changes)
    return c.CreateEmployee(**fields)  # type: ignore[arg-type]


def test_creating_a_location_records_location_created() -> None:
    cmd = c.CreateLocation("1 Main St", "Springfield", "IL", "62701", 1)
    assert model.create_location(cmd, 1, None) == [DOWNTOWN]


def test_a_location_id_can_be_used_once() -> None:
    cmd = c.CreateLocation("1 Main St", "Springfield", "IL", "62701", 1)
    with pytest.raises(AlreadyExists) as raised:
        model.create_location(cmd, 1, location(DOWNTOWN))
    assert raised.value.message == "A Location with this ID already exists."


@pytest.mark.parametrize(
    ("blank", "field", "message"),
    [
        ({"street_address": ""}, "street_address", "The Street Address cannot be blank."),
        ({"city": "  "}, "city", "The City cannot be blank."),
        ({"state": ""}, "state", "The State cannot be blank."),
        ({"postal_code": "\t"}, "postal_code", "The Postal Code cannot be blank."),
    ],
)
def test_location_fields_must_not_be_blank(
    blank: dict[str, str], field: str, message: str
) -> None:
    fields = {"street_address": "1 Main", "city": "X", "state": "Y", "postal_code": "1"}
    cmd = c.CreateLocation(**{**fields, **blank})
    with pytest.raises(ValidationFailed) as raised:
        model.create_location(cmd, 1, None)
    assert [(p.field, p.message) for p in raised.value.problems] == [(field, message)]
    assert raised.value.message == message


def test_every_invalid_field_is_reported_at_once() -> None:
    cmd = c.CreateLocation("", "", "x" * 201, "ok\x00", location_id=0)
    with pytest.raises(ValidationFailed) as raised:
        model.create_location(cmd, 1, None)
    assert [p.field for p in raised.value.problems] == [
        "id", "street_address", "city", "state", "postal_code",
    ]
    assert raised.value.problems[3].message == "The State must be at most 200 characters."
    assert raised.value.problems[4].message == "The Postal Code cannot contain control characters."


def test_control_characters_are_exactly_unicodes_category_cc() -> None:
    every = (chr(n) for n in range(sys.maxunicode + 1))
    control = [ch for ch in every if unicodedata.category(ch) == "Cc"]
    assert [ch for ch in map(chr, range(sys.maxunicode + 1)) if CONTROL.search(ch)] == control


def test_hiring_records_created_and_assigned_together() -> None:
    assert model.create_employee(hire(), 7, None, location(DOWNTOWN), TODAY) == list(HIRED)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"first_name": ""}, "first_name", "The First Name cannot be blank."),
        ({"last_name": " "}, "last_name", "The Last Name cannot be blank."),
        ({"job_title": ""}, "job_title", "The Job Title cannot be blank."),
        ({"date_of_birth": dt.date(2010, 11, 27)}, "date_of_birth",
         "Employees must be 16 years old or older."),
        ({"employee_id": 2**31}, "id", "The Id must be between 1 and 2147483647."),
        ({"location_id": -1}, "location_id", "The Location ID must be between 1 and 2147483647."),
    ],
)
def test_employee_fields_are_validated(
    changes: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        model.create_employee(hire(**changes), 7, None, location(DOWNTOWN), TODAY)
    assert [(p.field, p.message) for p in raised.value.problems] == [(field, message)]


def test_an_employee_turning_sixteen_today_may_be_hired() -> None:
    cmd = hire(date_of_birth=dt.date(2010, 11, 26))
    assert model.create_employee(cmd, 7, None, location(DOWNTOWN), TODAY) != []


def test_sixteen_years_before_a_leap_day_is_the_28th() -> None:
    assert sixteen_years_before(dt.date(2116, 2, 29)) == dt.date(2100, 2, 28)  # 2100: no leap


def test_hiring_into_a_missing_location_is_not_found() -> None:
    with pytest.raises(NotFound) as raised:
        model.create_employee(hire(location_id=9), 7, None, None, TODAY)
    assert (raised.value.message, raised.value.entity, raised.value.entity_id) == (
        "No Location with this ID exists.", "Location", 9,
    )


def test_an_employee_id_can_be_used_once_even_after_termination() -> None:
    gone = employee(*HIRED, e.EmployeeRemovedFromLocation(7, 1), e.EmployeeTerminated(7))
    with pytest.raises(AlreadyExists) as raised:
        model.create_employee(hire(), 7, gone, location(DOWNTOWN), TODAY)
    assert raised.value.message == "An Employee with this ID already exists."


def test_moving_records_removal_and_assignment_together() -> None:
    cmd = c.AssignEmployeeToLocation(7, 2)
    assert model.assign_employee(cmd, employee(*HIRED), location(UPTOWN)) == [
        e.EmployeeRemovedFromLocation(7, 1),
        e.EmployeeAssignedToLocation(7, 2),
    ]


def test_moving_to_the_current_location_is_a_rule_violation() -> None:
    with pytest.raises(RuleViolation) as raised:
        model.assign_employee(
            c.AssignEmployeeToLocation(7, 1), employee(*HIRED), location(DOWNTOWN)
        )
    assert raised.value.code == "EMPLOYEE_ALREADY_AT_LOCATION"
    assert raised.value.message == "This Employee is already assigned to that Location."


def test_moving_a_missing_employee_is_not_found() -> None:
    with pytest.raises(NotFound) as raised:
        model.assign_employee(c.AssignEmployeeToLocation(8, 2), None, location(UPTOWN))
    assert raised.value.message == "No Employee with this ID exists."


def test_moving_to_a_missing_location_is_not_found() -> None:
    with pytest.raises(NotFound) as raised:
        model.assign_employee(c.AssignEmployeeToLocation(7, 3), employee(*HIRED), None)
    assert raised.value.message == "No Location with this ID exists."


def test_a_stale_expected_version_is_a_conflict() -> None:
    with pytest.raises(Conflict) as raised:
        model.assign_employee(
            c.AssignEmployeeToLocation(7, 2, expected_version=1), employee(*HIRED), location(UPTOWN)
        )
    assert (raised.value.expected, raised.value.actual) == (1, 2)


def test_changing_a_job_title() -> None:
    cmd = c.ChangeEmployeeJobTitle(7, "Chef", expected_version=2)
    assert model.change_job_title(cmd, employee(*HIRED)) == [e.EmployeeJobTitleChanged(7, "Chef")]


def test_a_job_title_must_not_be_blank() -> None:
    with pytest.raises(ValidationFailed):
        model.change_job_title(c.ChangeEmployeeJobTitle(7, " "), employee(*HIRED))


def test_terminating_removes_from_the_location_then_terminates() -> None:
    assert model.terminate_employee(c.TerminateEmployee(7), employee(*HIRED)) == [
        e.EmployeeRemovedFromLocation(7, 1),
        e.EmployeeTerminated(7),
    ]


def test_a_terminated_employee_no_longer_exists_for_commands() -> None:
    gone = employee(*HIRED, e.EmployeeRemovedFromLocation(7, 1), e.EmployeeTerminated(7))
    with pytest.raises(NotFound):
        model.terminate_employee(c.TerminateEmployee(7), gone)
    with pytest.raises(NotFound):
        model.assign_employee(c.AssignEmployeeToLocation(7, 2), gone, location(UPTOWN))


def test_events_round_trip_through_their_stored_shape() -> None:
    schema = default_schema()
    for event in (DOWNTOWN, *HIRED, e.EmployeeJobTitleChanged(7, "Chef")):
        name = type(event).__name__
        assert from_data(name, to_data(event)) == event
        assert schema.upcast(name, schema.version_of(name), to_data(event)) == to_data(event)


def test_version_one_location_created_is_upcast_from_zip_code() -> None:
    old = {"location_id": 1, "street_address": "1 Main St", "city": "Springfield",
           "state": "IL", "zip_code": "62701"}
    upcast = default_schema().upcast("LocationCreated", 1, old)
    assert from_data("LocationCreated", upcast) == DOWNTOWN


def test_version_one_employee_created_is_upcast_from_a_datetime() -> None:
    old = {"employee_id": 7, "first_name": "Ana", "last_name": "Smith",
           "date_of_birth": "1990-05-17T00:00:00", "job_title": "Cook"}
    upcast = default_schema().upcast("EmployeeCreated", 1, old)
    assert from_data("EmployeeCreated", upcast) == HIRED[0]
