"""Aggregates and their decisions: state is rebuilt from events, commands are decided against it.

Assignment events live on the employee stream only: the employee aggregate alone owns the rule
"exactly one location at a time". A location's side of a move is checked, not written: the append
states the expected version of every location stream it relies on, so a move is one atomic append
across the three streams it touches.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from app.domain import commands as c
from app.domain import events as e
from app.domain.errors import AlreadyExists, Conflict, NotFound, RuleViolation
from app.domain.validation import FieldChecker

ALREADY_AT_LOCATION = "EMPLOYEE_ALREADY_AT_LOCATION"


@dataclass(frozen=True, slots=True)
class Location:
    location_id: int
    street_address: str
    city: str
    state: str
    postal_code: str
    version: int


@dataclass(frozen=True, slots=True)
class Employee:
    """What decisions about an employee need. No personal data: no rule reads names or the
    birth date, so neither the aggregate cache nor a snapshot ever holds them."""

    employee_id: int
    job_title: str
    location_id: int | None
    terminated: bool
    version: int
    personal_data_erased: bool = False


def evolve_location(state: Location | None, event: e.DomainEvent) -> Location | None:
    """The location after one more event of its stream."""
    if isinstance(event, e.LocationCreated):
        return Location(
            event.location_id, event.street_address, event.city, event.state,
            event.postal_code, version=1,
        )
    if state is None:
        raise ValueError(f"{type(event).__name__} before LocationCreated")
    return replace(state, version=state.version + 1)


def evolve_employee(state: Employee | None, event: e.DomainEvent) -> Employee | None:
    """The employee after one more event of its stream."""
    if isinstance(event, e.EmployeeCreated):
        return Employee(
            event.employee_id, event.job_title, location_id=None, terminated=False, version=1,
        )
    if state is None:
        raise ValueError(f"{type(event).__name__} before EmployeeCreated")
    if isinstance(event, e.EmployeeAssignedToLocation):
        return replace(state, version=state.version + 1, location_id=event.location_id)
    if isinstance(event, e.EmployeeRemovedFromLocation):
        return replace(state, version=state.version + 1, location_id=None)
    if isinstance(event, e.EmployeeJobTitleChanged):
        return replace(state, version=state.version + 1, job_title=event.job_title)
    if isinstance(event, e.EmployeeTerminated):
        return replace(state, version=state.version + 1, terminated=True)
    if isinstance(event, e.EmployeePersonalDataErased):
        return replace(state, version=state.version + 1, personal_data_erased=True)
    return replace(state, version=state.version + 1)


def validate_create_location(cmd: c.CreateLocation) -> None:
    """Field rules of CreateLocation, checked before any stream is read."""
    check = FieldChecker()
    check.identifier("id", "Id", cmd.location_id)
    check.text("street_address", "Street Address", cmd.street_address)
    check.text("city", "City", cmd.city)
    check.text("state", "State", cmd.state)
    check.text("postal_code", "Postal Code", cmd.postal_code)
    check.raise_if_any()


def create_location(
    cmd: c.CreateLocation, location_id: int, existing: Location | None
) -> list[e.DomainEvent]:
    """A new location, if its fields are valid and its id unused."""
    validate_create_location(cmd)
    if existing is not None:
        raise AlreadyExists("Location", location_id)
    return [
        e.LocationCreated(
            location_id, cmd.street_address, cmd.city, cmd.state, cmd.postal_code
        )
    ]


def validate_create_employee(cmd: c.CreateEmployee, today: dt.date) -> None:
    """Field rules of CreateEmployee, checked before any stream is read."""
    check = FieldChecker()
    check.identifier("id", "Id", cmd.employee_id)
    check.text("first_name", "First Name", cmd.first_name)
    check.text("last_name", "Last Name", cmd.last_name)
    check.adult("date_of_birth", cmd.date_of_birth, today)
    check.text("job_title", "Job Title", cmd.job_title)
    check.identifier("location_id", "Location ID", cmd.location_id)
    check.raise_if_any()


def create_employee(
    cmd: c.CreateEmployee,
    employee_id: int,
    existing: Employee | None,
    location: Location | None,
    today: dt.date,
) -> list[e.DomainEvent]:
    """Hire: EmployeeCreated and EmployeeAssignedToLocation, recorded together."""
    validate_create_employee(cmd, today)
    if existing is not None:
        raise AlreadyExists("Employee", employee_id)
    if location is None:
        raise NotFound("Location", cmd.location_id)
    return [
        e.EmployeeCreated(
            employee_id, cmd.first_name, cmd.last_name, cmd.date_of_birth, cmd.job_title
        ),
        e.EmployeeAssignedToLocation(employee_id, location.location_id),
    ]


def validate_assign(cmd: c.AssignEmployeeToLocation) -> None:
    check = FieldChecker()
    check.identifier("employee_id", "Employee ID", cmd.employee_id)
    check.identifier("location_id", "Location ID", cmd.location_id)
    check.version("expected_version", cmd.expected_version)
    check.raise_if_any()


def assign_employee(
    cmd: c.AssignEmployeeToLocation, employee: Employee | None, location: Location | None
) -> list[e.DomainEvent]:
    """Move: removal from the old location and assignment to the new one, recorded together."""
    validate_assign(cmd)
    live = require_employee(employee, cmd.employee_id, cmd.expected_version)
    if location is None:
        raise NotFound("Location", cmd.location_id)
    if live.location_id == location.location_id:
        raise RuleViolation(
            ALREADY_AT_LOCATION, "This Employee is already assigned to that Location."
        )
    moved: list[e.DomainEvent] = []
    if live.location_id is not None:
        moved.append(e.EmployeeRemovedFromLocation(live.employee_id, live.location_id))
    moved.append(e.EmployeeAssignedToLocation(live.employee_id, location.location_id))
    return moved


def change_job_title(
    cmd: c.ChangeEmployeeJobTitle, employee: Employee | None
) -> list[e.DomainEvent]:
    check = FieldChecker()
    check.identifier("employee_id", "Employee ID", cmd.employee_id)
    check.text("job_title", "Job Title", cmd.job_title)
    check.version("expected_version", cmd.expected_version)
    check.raise_if_any()
    live = require_employee(employee, cmd.employee_id, cmd.expected_version)
    return [e.EmployeeJobTitleChanged(live.employee_id, cmd.job_title)]


def terminate_employee(
    cmd: c.TerminateEmployee, employee: Employee | None
) -> list[e.DomainEvent]:
    """Termination: removal from the current location, then EmployeeTerminated."""
    live = require_employee(employee, cmd.employee_id, cmd.expected_version)
    ended: list[e.DomainEvent] = []
    if live.location_id is not None:
        ended.append(e.EmployeeRemovedFromLocation(live.employee_id, live.location_id))
    ended.append(e.EmployeeTerminated(live.employee_id))
    return ended


def forget_employee(cmd: c.ForgetEmployee, employee: Employee | None) -> list[e.DomainEvent]:
    """Erasure of an employee's personal data, employed or terminated; nothing when it was
    erased before (the caller answers with that first erasure). An id that cannot exist is
    simply not found."""
    if employee is None:
        raise NotFound("Employee", cmd.employee_id)
    if employee.personal_data_erased:
        return []
    return [e.EmployeePersonalDataErased(employee.employee_id)]


def require_employee(
    employee: Employee | None, employee_id: int, expected_version: int | None
) -> Employee:
    """The live employee, at the version the client expects when it states one."""
    if employee is None or employee.terminated:
        raise NotFound("Employee", employee_id)
    if expected_version is not None and expected_version != employee.version:
        raise Conflict(expected_version, employee.version)
    return employee
