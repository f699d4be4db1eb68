"""Commands: what a client asks the write side to do; omitted ids are assigned by the service."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CreateLocation:
    street_address: str
    city: str
    state: str
    postal_code: str
    location_id: int | None = None


@dataclass(frozen=True, slots=True)
class CreateEmployee:
    first_name: str
    last_name: str
    date_of_birth: dt.date
    job_title: str
    location_id: int
    employee_id: int | None = None


@dataclass(frozen=True, slots=True)
class AssignEmployeeToLocation:
    employee_id: int
    location_id: int
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeEmployeeJobTitle:
    employee_id: int
    job_title: str
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class TerminateEmployee:
    employee_id: int
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class ForgetEmployee:
    employee_id: int


Command = (
    CreateLocation
    | CreateEmployee
    | AssignEmployeeToLocation
    | ChangeEmployeeJobTitle
    | TerminateEmployee
    | ForgetEmployee
)
