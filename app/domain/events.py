"""Domain events: the facts the aggregates record, one frozen dataclass per stored `type`.

This module is the event vocabulary, declared once: `DomainEvent` names every event, and the
stored type strings, the decoding of stored data and the projections all follow from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocationCreated:
    location_id: int
    street_address: str
    city: str
    state: str
    postal_code: str


@dataclass(frozen=True, slots=True)
class EmployeeCreated:
    """A hire. The names and the birth date are personal data: they read None once erased."""

    employee_id: int
    first_name: str | None
    last_name: str | None
    date_of_birth: dt.date | None
    job_title: str


@dataclass(frozen=True, slots=True)
class EmployeeAssignedToLocation:
    employee_id: int
    location_id: int


@dataclass(frozen=True, slots=True)
class EmployeeRemovedFromLocation:
    employee_id: int
    location_id: int


@dataclass(frozen=True, slots=True)
class EmployeeJobTitleChanged:
    employee_id: int
    job_title: str


@dataclass(frozen=True, slots=True)
class EmployeeTerminated:
    employee_id: int


@dataclass(frozen=True, slots=True)
class EmployeePersonalDataErased:
    """The employee asked to be forgotten: their personal data is destroyed everywhere."""

    employee_id: int


DomainEvent = (
    LocationCreated
    | EmployeeCreated
    | EmployeeAssignedToLocation
    | EmployeeRemovedFromLocation
    | EmployeeJobTitleChanged
    | EmployeeTerminated
    | EmployeePersonalDataErased
)


def location_stream(location_id: int) -> str:
    """The stream id of a location's events."""
    return f"location-{location_id}"


def employee_stream(employee_id: int) -> str:
    """The stream id of an employee's events."""
    return f"employee-{employee_id}"
