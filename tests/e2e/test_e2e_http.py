"""End to end over real HTTP: `python -m app serve` in a subprocess, driven by a GraphQL client.

One server (SQLite + embedded Valkey in a temporary directory) is shared by the module; each test
works on its own id range so tests do not see each other's entities. Tests that need an empty
service (the tutorial run, global pagination) get a fresh server of their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

from tests.harness.server import RunningServer, running_server

MAX_ID = 2**31 - 1
SERVER_ENV = {"READ_MODEL_WAIT_SECONDS": "1"}

ERROR_SELECTIONS = {
    "ValidationError": "fields { field message }",
    "NotFoundError": "entity id",
    "AlreadyExistsError": "entity id",
    "ConflictError": "expectedVersion actualVersion",
}


def error_fields(*members: str) -> str:
    """`__typename`, the Error interface, and the extra fields of the union's error members."""
    extra = " ".join(f"... on {m} {{ {ERROR_SELECTIONS[m]} }}" for m in members)
    return f"__typename ... on Error {{ message code }} {extra}"


EMPLOYEE_FIELDS = "id firstName lastName dateOfBirth jobTitle locationId version"
LOCATION_FIELDS = (
    "id streetAddress city state postalCode employeeCount version employees { id locationId }"
)

CREATE_LOCATION = f"""
mutation CreateLocation($input: CreateLocationInput!) {{
  createLocation(input: $input) {{
    {error_fields('ValidationError', 'AlreadyExistsError')}
    ... on LocationPayload {{ position location {{ {LOCATION_FIELDS} }} }}
  }}
}}"""
CREATE_EMPLOYEE = f"""
mutation CreateEmployee($input: CreateEmployeeInput!) {{
  createEmployee(input: $input) {{
    {error_fields('ValidationError', 'AlreadyExistsError', 'NotFoundError')}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
ASSIGN = f"""
mutation Assign($input: AssignEmployeeToLocationInput!) {{
  assignEmployeeToLocation(input: $input) {{
    {error_fields('ValidationError', 'NotFoundError', 'ConflictError')}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
CHANGE_TITLE = f"""
mutation ChangeTitle($input: ChangeEmployeeJobTitleInput!) {{
  changeEmployeeJobTitle(input: $input) {{
    {error_fields('ValidationError', 'NotFoundError', 'ConflictError')}
    ... on EmployeePayload {{ position employee {{ {EMPLOYEE_FIELDS} }} }}
  }}
}}"""
TERMINATE = f"""
mutation Terminate($input: TerminateEmployeeInput!) {{
  terminateEmployee(input: $input) {{
    {error_fields('NotFoundError', 'ConflictError')}
    ... on TerminatePayload {{ employeeId position }}
  }}
}}"""
LOCATION = f"""
query Location($id: Int!, $minPosition: Int) {{
  location(id: $id, minPosition: $minPosition) {{ {LOCATION_FIELDS} }}
}}"""
LOCATIONS = f"query Locations {{ locations {{ {LOCATION_FIELDS} }} }}"
EMPLOYEE = f"""
query Employee($id: Int!, $minPosition: Int) {{
  employee(id: $id, minPosition: $minPosition) {{ {EMPLOYEE_FIELDS} location {{ id }} }}
}}"""
EMPLOYEES = f"""
query Employees($locationId: Int, $first: Int, $after: String) {{
  employees(locationId: $locationId, first: $first, after: $after) {{
    edges {{ cursor node {{ {EMPLOYEE_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
    totalCount
  }}
}}"""
EVENTS = """
query Events($after: Int, $first: Int, $streamId: String) {
  events(after: $after, first: $first, streamId: $streamId) {
    position streamId version type data correlationId
  }
}"""
STATUS = "query Status { projectionStatus { position headPosition lag rebuilding } }"


class Api:
    """A GraphQL client (gql over httpx) plus a raw HTTP client for what gql cannot send."""

    def __init__(self, session: AsyncClientSession, http: httpx.AsyncClient) -> None:
        self.session = session
        self.http = http

    async def run(
        self, query: str, headers: dict[str, str] | None = None, **variables: Any
    ) -> dict[str, Any]:
        """The response's data; a GraphQL error fails the call (TransportQueryError)."""
        request = GraphQLRequest(query, variable_values=variables or None)
        extra = {"headers": headers} if headers else None
        data: dict[str, Any] = await self.session.execute(request, extra_args=extra)
        return data

    async def graphql_errors(self, query: str, **variables: Any) -> list[dict[str, Any]]:
        """The GraphQL errors the server answers `query` with (the call must fail)."""
        with pytest.raises(TransportQueryError) as raised:
            await self.run(query, **variables)
        assert raised.value.errors, "expected GraphQL errors"
        return list(raised.value.errors)

    async def create_location(self, location_id: int | None, **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "streetAddress": f"{location_id or 0} Main Street", "city": "Springfield",
            "state": "IL", "postalCode": "62701",
        }
        if location_id is not None:
            payload["id"] = location_id
        payload.update(fields)
        result: dict[str, Any] = (await self.run(CREATE_LOCATION, input=payload))["createLocation"]
        return result

    async def create_employee(
        self, employee_id: int | None, location_id: int, **fields: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "firstName": "Ana", "lastName": "Smith", "dateOfBirth": "1990-05-17",
            "jobTitle": "Line Cook", "locationId": location_id,
        }
        if employee_id is not None:
            payload["id"] = employee_id
        payload.update(fields)
        result: dict[str, Any] = (await self.run(CREATE_EMPLOYEE, input=payload))["createEmployee"]
        return result

    async def assign(self, employee_id: int, location_id: int, **fields: Any) -> dict[str, Any]:
        payload = {"employeeId": employee_id, "locationId": location_id, **fields}
        result: dict[str, Any] = (await self.run(ASSIGN, input=payload))[
            "assignEmployeeToLocation"
        ]
        return result

    async def terminate(self, employee_id: int, **fields: Any) -> dict[str, Any]:
        payload = {"employeeId": employee_id, **fields}
        result: dict[str, Any] = (await self.run(TERMINATE, input=payload))["terminateEmployee"]
        return result

    async def location(self, location_id: int, **args: Any) -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await self.run(LOCATION, id=location_id, **args))[
            "location"
        ]
        return found

    async def employee(self, employee_id: int, **args: Any) -> dict[str, Any] | None:
        found: dict[str, Any] | None = (await self.run(EMPLOYEE, id=employee_id, **args))[
            "employee"
        ]
        return found

    async def events(self, **args: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.run(EVENTS, **args))["events"]
        return found

    async def head(self) -> int:
        status = (await self.run(STATUS))["projectionStatus"]
        return int(status["headPosition"])

    async def all_employee_ids(self) -> list[int]:
        page = (await self.run(EMPLOYEES, first=500))["employees"]
        assert page["pageInfo"]["hasNextPage"] is False
        return [edge["node"]["id"] for edge in page["edges"]]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("e2e-shared"), extra_env=SERVER_ENV) as server:
        yield server


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "e2e-fresh", extra_env=SERVER_ENV) as server:
        yield server


@asynccontextmanager
async def open_api(server: RunningServer) -> AsyncIterator[Api]:
    transport = HTTPXAsyncTransport(url=server.graphql_url, timeout=30.0)
    client = Client(transport=transport, fetch_schema_from_transport=False, execute_timeout=30)
    async with client as session, httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as http:
        yield Api(session, http)


@pytest.fixture
async def api(shared_server: RunningServer) -> AsyncIterator[Api]:
    async with open_api(shared_server) as opened:
        yield opened


@pytest.fixture
async def fresh_api(fresh_server: RunningServer) -> AsyncIterator[Api]:
    async with open_api(fresh_server) as opened:
        yield opened


def years_ago(years: int, today: dt.date | None = None) -> dt.date:
    today = today or dt.date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def field_errors(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["field"], f["message"]) for f in result["fields"]]


def id_range_message(label: str) -> str:
    return f"The {label} must be between 1 and {MAX_ID}."


# 1. The original tutorial's Postman run, on an empty service.


async def test_tutorial_postman_run_creates_lists_and_finds_locations(fresh_api: Api) -> None:
    api = fresh_api
    first = await api.create_location(
        1, streetAddress="1 Main Street", city="Springfield", state="IL", postalCode="62701"
    )
    assert first == {
        "__typename": "LocationPayload",
        "position": 1,
        "location": {
            "id": 1, "streetAddress": "1 Main Street", "city": "Springfield", "state": "IL",
            "postalCode": "62701", "employeeCount": 0, "version": 1, "employees": [],
        },
    }

    again = await api.create_location(
        1, streetAddress="1 Main Street", city="Springfield", state="IL", postalCode="62701"
    )
    assert again == {
        "__typename": "AlreadyExistsError",
        "message": "A Location with this ID already exists.",
        "code": "ALREADY_EXISTS",
        "entity": "Location",
        "id": 1,
    }

    second = await api.create_location(
        2, streetAddress="2 Oak Avenue", city="Portland", state="OR", postalCode="97201"
    )
    assert second["__typename"] == "LocationPayload"
    assert second["position"] == 2

    listed = (await api.run(LOCATIONS))["locations"]
    assert [(loc["id"], loc["city"]) for loc in listed] == [(1, "Springfield"), (2, "Portland")]

    assert await api.location(2) == {
        "id": 2, "streetAddress": "2 Oak Avenue", "city": "Portland", "state": "OR",
        "postalCode": "97201", "employeeCount": 0, "version": 1, "employees": [],
    }
    assert await api.location(3) is None
    assert await api.head() == 2


# 2. Validation and rule errors: exact messages and camelCase fields, nothing written.


async def test_blank_location_fields_are_each_reported_and_nothing_is_written(api: Api) -> None:
    head = await api.head()
    result = await api.create_location(
        201, streetAddress="", city="   ", state="", postalCode="\t"
    )
    assert result == {
        "__typename": "ValidationError",
        "code": "VALIDATION_FAILED",
        "message": "The Street Address cannot be blank. The City cannot be blank. "
                   "The State cannot be blank. The Postal Code cannot be blank.",
        "fields": [
            {"field": "streetAddress", "message": "The Street Address cannot be blank."},
            {"field": "city", "message": "The City cannot be blank."},
            {"field": "state", "message": "The State cannot be blank."},
            {"field": "postalCode", "message": "The Postal Code cannot be blank."},
        ],
    }
    only_city = await api.create_location(201, city="")
    assert only_city["message"] == "The City cannot be blank."
    assert field_errors(only_city) == [("city", "The City cannot be blank.")]
    assert await api.location(201) is None
    assert await api.head() == head


async def test_employee_field_rules_age_and_existence_errors(api: Api) -> None:
    made = await api.create_location(210)
    assert made["__typename"] == "LocationPayload"
    head = await api.head()

    blank = await api.create_employee(210, 210, firstName="", lastName=" ", jobTitle="")
    assert blank["__typename"] == "ValidationError"
    assert blank["code"] == "VALIDATION_FAILED"
    assert field_errors(blank) == [
        ("firstName", "The First Name cannot be blank."),
        ("lastName", "The Last Name cannot be blank."),
        ("jobTitle", "The Job Title cannot be blank."),
    ]

    one_day_too_young = years_ago(16) + dt.timedelta(days=1)
    young = await api.create_employee(210, 210, dateOfBirth=one_day_too_young.isoformat())
    assert young["__typename"] == "ValidationError"
    assert young["message"] == "Employees must be 16 years old or older."
    assert field_errors(young) == [("dateOfBirth", "Employees must be 16 years old or older.")]

    nowhere = await api.create_employee(210, 219)
    assert nowhere == {
        "__typename": "NotFoundError", "message": "No Location with this ID exists.",
        "code": "NOT_FOUND", "entity": "Location", "id": 219,
    }
    assert await api.head() == head

    sixteen_today = years_ago(16)
    hired = await api.create_employee(210, 210, dateOfBirth=sixteen_today.isoformat())
    assert hired["__typename"] == "EmployeePayload"
    assert hired["position"] == head + 2  # EmployeeCreated + EmployeeAssignedToLocation
    assert hired["employee"] == {
        "id": 210, "firstName": "Ana", "lastName": "Smith",
        "dateOfBirth": sixteen_today.isoformat(), "jobTitle": "Line Cook", "locationId": 210,
        "version": 2,
    }

    duplicate = await api.create_employee(210, 210, firstName="Ben")
    assert duplicate == {
        "__typename": "AlreadyExistsError", "message": "An Employee with this ID already exists.",
        "code": "ALREADY_EXISTS", "entity": "Employee", "id": 210,
    }
    assert (await api.employee(210) or {})["firstName"] == "Ana"
    assert await api.head() == head + 2


async def test_assignment_errors_unknown_employee_unknown_location_and_same_location(
    api: Api,
) -> None:
    assert (await api.create_location(220))["__typename"] == "LocationPayload"
    assert (await api.create_employee(220, 220))["__typename"] == "EmployeePayload"
    head = await api.head()

    unknown_employee = await api.assign(229, 220)
    assert unknown_employee == {
        "__typename": "NotFoundError", "message": "No Employee with this ID exists.",
        "code": "NOT_FOUND", "entity": "Employee", "id": 229,
    }
    unknown_location = await api.assign(220, 228)
    assert unknown_location == {
        "__typename": "NotFoundError", "message": "No Location with this ID exists.",
        "code": "NOT_FOUND", "entity": "Location", "id": 228,
    }
    same = await api.assign(220, 220)
    assert same == {
        "__typename": "RuleViolationError",
        "message": "This Employee is already assigned to that Location.",
        "code": "EMPLOYEE_ALREADY_AT_LOCATION",
    }
    blank_title = (
        await api.run(CHANGE_TITLE, input={"employeeId": 220, "jobTitle": " "})
    )["changeEmployeeJobTitle"]
    assert blank_title["__typename"] == "ValidationError"
    assert field_errors(blank_title) == [("jobTitle", "The Job Title cannot be blank.")]
    assert await api.head() == head
    assert (await api.employee(220) or {})["version"] == 2


async def test_zero_negative_and_out_of_range_ids_are_validation_errors(api: Api) -> None:
    head = await api.head()
    for bad in (0, -1, -(2**31)):
        result = await api.create_location(bad)
        assert result["__typename"] == "ValidationError"
        assert field_errors(result) == [("id", id_range_message("Id"))]

    employee = await api.create_employee(-7, 0)
    assert employee["__typename"] == "ValidationError"
    assert field_errors(employee) == [
        ("id", id_range_message("Id")), ("locationId", id_range_message("Location ID")),
    ]

    move = await api.assign(0, -3)
    assert move["__typename"] == "ValidationError"
    assert field_errors(move) == [
        ("employeeId", id_range_message("Employee ID")),
        ("locationId", id_range_message("Location ID")),
    ]
    negative_version = await api.assign(1, 1, expectedVersion=-1)
    assert field_errors(negative_version) == [
        ("expectedVersion", "The Expected Version cannot be negative."),
    ]

    # Beyond GraphQL's 32-bit Int the request is refused before any resolver runs.
    errors = await api.graphql_errors(CREATE_LOCATION, input={
        "id": 2**31, "streetAddress": "a", "city": "b", "state": "c", "postalCode": "d",
    })
    assert [e["message"] for e in errors] == [
        "Variable '$input' has invalid value at .id: "
        "Int cannot represent non 32-bit signed integer value: 2147483648",
    ]
    assert await api.head() == head


async def test_text_longer_than_200_characters_is_refused_and_200_is_accepted(api: Api) -> None:
    head = await api.head()
    too_long = await api.create_location(230, city="x" * 201)
    assert too_long["__typename"] == "ValidationError"
    assert too_long["message"] == "The City must be at most 200 characters."
    assert field_errors(too_long) == [("city", "The City must be at most 200 characters.")]

    huge = await api.create_location(230, streetAddress="y" * 10_000, postalCode="z" * 10_000)
    assert field_errors(huge) == [
        ("streetAddress", "The Street Address must be at most 200 characters."),
        ("postalCode", "The Postal Code must be at most 200 characters."),
    ]
    assert await api.location(230) is None
    assert await api.head() == head

    exactly = await api.create_location(230, city="c" * 200)
    assert exactly["__typename"] == "LocationPayload"
    assert exactly["location"]["city"] == "c" * 200
    huge_name = await api.create_employee(230, 230, firstName="n" * 10_000)
    assert field_errors(huge_name) == [
        ("firstName", "The First Name must be at most 200 characters."),
    ]
    assert await api.employee(230) is None
    assert await api.head() == head + 1


async def test_stale_expected_version_is_a_conflict_and_the_right_one_succeeds(api: Api) -> None:
    for location_id in (240, 241, 242):
        assert (await api.create_location(location_id))["__typename"] == "LocationPayload"
    hired = await api.create_employee(240, 240)
    assert hired["employee"]["version"] == 2
    head = await api.head()

    stale = await api.assign(240, 241, expectedVersion=1)
    assert stale == {
        "__typename": "ConflictError",
        "message": "Expected version 1 but the employee is at version 2.",
        "code": "CONCURRENCY_CONFLICT",
        "expectedVersion": 1,
        "actualVersion": 2,
    }
    assert await api.head() == head

    moved = await api.assign(240, 241, expectedVersion=2)
    assert moved["__typename"] == "EmployeePayload"
    assert moved["employee"]["version"] == 4
    assert moved["employee"]["locationId"] == 241

    stale_again = await api.terminate(240, expectedVersion=2)
    assert stale_again == {
        "__typename": "ConflictError",
        "message": "Expected version 2 but the employee is at version 4.",
        "code": "CONCURRENCY_CONFLICT",
        "expectedVersion": 2,
        "actualVersion": 4,
    }
    assert (await api.employee(240) or {})["locationId"] == 241


# 3. A move is one atomic append, visible on both locations.


async def test_moving_an_employee_updates_both_locations_and_logs_one_atomic_move(
    api: Api,
) -> None:
    for location_id in (301, 302):
        assert (await api.create_location(location_id))["__typename"] == "LocationPayload"
    assert (await api.create_employee(301, 301))["__typename"] == "EmployeePayload"
    assert (await api.create_employee(302, 301, firstName="Ben"))["__typename"] == (
        "EmployeePayload"
    )
    before = await api.location(301)
    assert before is not None
    assert before["employeeCount"] == 2
    assert [e["id"] for e in before["employees"]] == [301, 302]

    request_id = "e2e-move-301"
    moved = (await api.run(
        ASSIGN, headers={"X-Request-ID": request_id},
        input={"employeeId": 301, "locationId": 302},
    ))["assignEmployeeToLocation"]
    assert moved["__typename"] == "EmployeePayload"
    assert moved["employee"]["locationId"] == 302
    assert moved["employee"]["version"] == 4
    position = moved["position"]

    old, new = await api.location(301), await api.location(302)
    assert old is not None
    assert new is not None
    assert old["employeeCount"] == 1
    assert old["employees"] == [{"id": 302, "locationId": 301}]
    assert new["employeeCount"] == 1
    assert new["employees"] == [{"id": 301, "locationId": 302}]
    employee = await api.employee(301)
    assert employee is not None
    assert employee["location"] == {"id": 302}

    history = await api.events(streamId="employee-301")
    assert [(e["type"], e["version"]) for e in history] == [
        ("EmployeeCreated", 1), ("EmployeeAssignedToLocation", 2),
        ("EmployeeRemovedFromLocation", 3), ("EmployeeAssignedToLocation", 4),
    ]
    removed, assigned = history[2], history[3]
    assert (removed["position"], assigned["position"]) == (position - 1, position)
    assert removed["data"] == {"employee_id": 301, "location_id": 301}
    assert assigned["data"] == {"employee_id": 301, "location_id": 302}
    assert removed["correlationId"] == assigned["correlationId"] == request_id
    assert history[0]["correlationId"] != request_id

    # Nothing else was written by the move: the global log ends with exactly these two events.
    tail = await api.events(after=position - 2)
    assert [e["position"] for e in tail] == [position - 1, position]
    assert await api.head() == position


# 4. Concurrent moves over HTTP keep every employee at exactly one location.


async def test_concurrent_moves_leave_every_employee_at_exactly_one_location(api: Api) -> None:
    locations = [401, 402, 403]
    employees = [401, 402, 403, 404]
    for location_id in locations:
        assert (await api.create_location(location_id))["__typename"] == "LocationPayload"
    for employee_id in employees:
        hired = await api.create_employee(employee_id, 401)
        assert hired["__typename"] == "EmployeePayload"

    requests = [
        (employees[n % len(employees)], locations[(n // len(employees) + n) % len(locations)])
        for n in range(20)
    ]
    results = await asyncio.gather(*(api.assign(e, loc) for e, loc in requests))

    succeeded: list[tuple[int, int, int]] = []  # (position, employee, location)
    for (employee_id, location_id), result in zip(requests, results, strict=True):
        kind = result["__typename"]
        assert kind in {"EmployeePayload", "RuleViolationError", "ConflictError"}, result
        if kind == "EmployeePayload":
            assert result["employee"]["id"] == employee_id
            succeeded.append((result["position"], employee_id, location_id))
        elif kind == "RuleViolationError":
            assert result["code"] == "EMPLOYEE_ALREADY_AT_LOCATION"
        else:
            assert result["code"] == "CONCURRENCY_CONFLICT"
    assert succeeded, "at least one move must have gone through"
    last_position = max(position for position, _, _ in succeeded)

    final: dict[int, dict[str, Any]] = {}
    for employee_id in employees:
        found = await api.employee(employee_id, minPosition=last_position)
        assert found is not None
        final[employee_id] = found
    listed: dict[int, list[int]] = {}
    for location_id in locations:
        location = await api.location(location_id, minPosition=last_position)
        assert location is not None
        listed[location_id] = [e["id"] for e in location["employees"]]
        assert location["employeeCount"] == len(listed[location_id])
    for employee_id in employees:
        holders = [loc for loc, ids in listed.items() if employee_id in ids]
        assert holders == [final[employee_id]["locationId"]], (employee_id, listed)
    assert sum(len(ids) for ids in listed.values()) == len(employees)

    # The log agrees: each successful move is an Assigned event at its payload's position, every
    # removal names the location the employee was at, and the last assignment is where it is now.
    for employee_id in employees:
        history = await api.events(streamId=f"employee-{employee_id}")
        assert [e["version"] for e in history] == list(range(1, len(history) + 1))
        assert final[employee_id]["version"] == len(history)
        at: int | None = None
        for event in history[1:]:
            if event["type"] == "EmployeeRemovedFromLocation":
                assert event["data"]["location_id"] == at
                at = None
            else:
                assert event["type"] == "EmployeeAssignedToLocation"
                assert at is None, "assigned while still at another location"
                at = event["data"]["location_id"]
        assert at == final[employee_id]["locationId"]
        by_position = {e["position"]: e for e in history}
        for position, moved_id, location_id in succeeded:
            if moved_id == employee_id:
                assert by_position[position]["type"] == "EmployeeAssignedToLocation"
                assert by_position[position]["data"]["location_id"] == location_id


# 5. Termination.


async def test_terminated_employee_disappears_everywhere_and_cannot_be_terminated_again(
    api: Api,
) -> None:
    assert (await api.create_location(501))["__typename"] == "LocationPayload"
    for employee_id in (501, 502):
        assert (await api.create_employee(employee_id, 501))["__typename"] == "EmployeePayload"
    head = await api.head()

    ended = await api.terminate(501)
    assert ended == {"__typename": "TerminatePayload", "employeeId": 501, "position": head + 2}
    assert await api.employee(501) is None
    location = await api.location(501)
    assert location is not None
    assert location["employees"] == [{"id": 502, "locationId": 501}]
    assert location["employeeCount"] == 1
    assert 501 not in await api.all_employee_ids()
    assert 502 in await api.all_employee_ids()
    by_location = (await api.run(EMPLOYEES, locationId=501))["employees"]
    assert [edge["node"]["id"] for edge in by_location["edges"]] == [502]
    assert by_location["totalCount"] == 1

    history = await api.events(streamId="employee-501")
    assert [e["type"] for e in history[-2:]] == [
        "EmployeeRemovedFromLocation", "EmployeeTerminated",
    ]
    assert [e["position"] for e in history[-2:]] == [head + 1, head + 2]

    again = await api.terminate(501)
    assert again == {
        "__typename": "NotFoundError", "message": "No Employee with this ID exists.",
        "code": "NOT_FOUND", "entity": "Employee", "id": 501,
    }
    cannot_move = await api.assign(501, 501)
    assert cannot_move["__typename"] == "NotFoundError"
    assert cannot_move["entity"] == "Employee"
    assert await api.head() == head + 2


# 6. Idempotency keys.


async def test_repeating_a_mutation_with_its_idempotency_key_replays_without_writing(
    api: Api,
) -> None:
    assert (await api.create_location(601))["__typename"] == "LocationPayload"
    assert (await api.create_location(602))["__typename"] == "LocationPayload"
    first = await api.create_employee(
        601, 601, firstName="Idem", idempotencyKey="e2e-hire-601"
    )
    assert first["__typename"] == "EmployeePayload"
    head = await api.head()
    assert first["position"] == head

    replay = await api.create_employee(
        601, 601, firstName="Idem", idempotencyKey="e2e-hire-601"
    )
    assert replay == first
    assert await api.head() == head
    assert len(await api.events(streamId="employee-601")) == 2

    # Without a key the same request is a new command: the id is taken now.
    unkeyed = await api.create_employee(601, 601, firstName="Idem")
    assert unkeyed["__typename"] == "AlreadyExistsError"

    moved = await api.assign(601, 602, idempotencyKey="e2e-move-601")
    assert moved["__typename"] == "EmployeePayload"
    moved_again = await api.assign(601, 602, idempotencyKey="e2e-move-601")
    assert moved_again["__typename"] == "EmployeePayload"
    assert moved_again["position"] == moved["position"]
    assert await api.head() == moved["position"]

    after_move = await api.head()
    errors = await api.graphql_errors(
        ASSIGN, input={"employeeId": 601, "locationId": 601, "idempotencyKey": "e2e-move-601"},
    )
    assert [(e["message"], e["extensions"]) for e in errors] == [(
        "This idempotencyKey was already used for a different request.",
        {"code": "IDEMPOTENCY_KEY_REUSED"},
    )]
    errors = await api.graphql_errors(
        TERMINATE, input={"employeeId": 601, "idempotencyKey": "e2e-hire-601"},
    )
    assert errors[0]["extensions"] == {"code": "IDEMPOTENCY_KEY_REUSED"}

    blank_key = await api.create_location(603, idempotencyKey="  ")
    assert blank_key["__typename"] == "ValidationError"
    assert field_errors(blank_key) == [
        ("idempotencyKey", "The Idempotency Key cannot be blank."),
    ]
    assert await api.head() == after_move
    assert (await api.employee(601) or {})["locationId"] == 602


# 7. Hostile input never crashes the server or writes anything.


def assert_clean(response: httpx.Response) -> None:
    """A client error, not a crash: below 500, and no stack trace leaked into the body."""
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


def graphql_messages(response: httpx.Response) -> list[str]:
    """The messages of a GraphQL error response that executed nothing."""
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    body = response.json()
    assert body["data"] is None
    return [error["message"] for error in body["errors"]]


JSON = {"Content-Type": "application/json"}


def refusal(response: httpx.Response) -> tuple[str, str]:
    """The message and code of the one error of a request refused before it executed."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    return error["message"], error["extensions"]["code"]

# (raw body, content type, expected status, expected message of its BAD_REQUEST error)
MALFORMED_BODIES = [
    (b'{"query": "{ locations { id }', "application/json", 400,
     "Unable to parse request body as JSON"),
    ('{"query": "{ __typename }"}'.encode("utf-16"), "application/json", 400,
     "Unable to parse request body as JSON"),
    (b'{"query": "{ \xff }"}', "application/json", 400, "Unable to parse request body as JSON"),
    (b'{"query": "{ __typename }", "variables": {"n": NaN}}', "application/json", 400,
     "Unable to parse request body as JSON"),
    (b'"just a string"', "application/json", 400, "The request body must be a JSON object."),
    (b"42", "application/json", 400, "The request body must be a JSON object."),
    (b"null", "application/json", 400, "The request body must be a JSON object."),
    (b"[1, 2]", "application/json", 400, "Batching is not enabled"),
    (b'{"query": 5}', "application/json", 400,
     "The GraphQL operation's `query` must be a string or null, if provided."),
    (b'{"query": "{ __typename }", "variables": [1]}', "application/json", 400,
     "The GraphQL operation's `variables` must be an object or null, if provided."),
    (b"query={ __typename }", "text/plain", 400, "Unsupported content type"),
]


async def test_malformed_http_bodies_get_a_400_and_the_connection_stays_usable(api: Api) -> None:
    head = await api.head()
    for body, content_type, status, answer in MALFORMED_BODIES:
        response = await api.http.post(
            "/graphql", content=body, headers={"Content-Type": content_type}
        )
        assert_clean(response)
        assert (response.status_code, refusal(response)) == (status, (answer, "BAD_REQUEST")), body
    # The same keep-alive client goes on working (a crash would have reset the connection).
    fine = await api.http.post("/graphql", json={"query": "{ __typename }"})
    assert fine.json() == {"data": {"__typename": "Query"}}

    over_get = await api.http.get("/graphql", params={
        "query": "mutation { terminateEmployee(input: {employeeId: 1}) { __typename } }",
    })
    assert_clean(over_get)
    assert (over_get.status_code, refusal(over_get)) == (
        400, ("mutations are not allowed when using GET", "GRAPHQL_VALIDATION_FAILED"),
    )
    no_query = await api.http.post("/graphql", json={"variables": {}})
    assert (no_query.status_code, refusal(no_query)) == (
        400, ("No GraphQL query found in the request", "GRAPHQL_VALIDATION_FAILED"),
    )
    assert (await api.http.get("/healthz")).status_code == 200
    assert await api.head() == head


# Requests answered through the plain-POST path (app/web/posted.py) and, sent with a content
# type only the library's looser check takes as JSON, through the library's whole view.
SAME_EITHER_WAY: list[dict[str, Any]] = [
    {"query": "query E($id: Int!) { employee(id: $id) { id } }", "variables": {"id": 1},
     "operationName": "E"},
    {"query": "{ locations { id city } }", "extensions": {"cost": True}},
    {"query": "{ locations { salary } }"},
    {"query": "{ locations { id }"},
    {"query": "query A { __typename }", "operationName": "B"},
    {"query": "subscription { events { position } }"},
    {"query": "mutation { changeEmployeeJobTitle(input: {employeeId: 2147483000, "
              "jobTitle: \"Chef\"}) { __typename ... on Error { message code } } }"},
]


async def test_plain_json_posts_are_answered_as_the_library_answers_them(api: Api) -> None:
    head = await api.head()
    kinds: set[bool] = set()
    for payload in SAME_EITHER_WAY:
        body = json.dumps(payload).encode()
        answers = [
            await api.http.post("/graphql", content=body, headers={"Content-Type": kind})
            for kind in ("application/json", "application/jsonx")
        ]
        plain, library = answers
        assert plain.json().get("data") or plain.json().get("errors"), payload
        assert (plain.status_code, plain.headers["content-type"], plain.json()) == (
            library.status_code, library.headers["content-type"], library.json()
        ), payload
        kinds.add(plain.json().get("extensions") is not None)
    assert kinds == {True, False}  # the cost extension came back, through both
    assert await api.head() == head


async def test_hostile_graphql_gets_clean_errors_and_writes_nothing(api: Api) -> None:
    head = await api.head()
    http = api.http

    unknown_field = await http.post("/graphql", json={"query": "{ locations { id salary } }"})
    assert_clean(unknown_field)
    assert graphql_messages(unknown_field) == ["Cannot query field 'salary' on type 'Location'."]

    unknown_input = await http.post("/graphql", json={"query": """mutation {
        createLocation(input: {id: 700, streetAddress: "a", city: "b", state: "c",
                               postalCode: "d", mayor: "e"}) { __typename } }"""})
    assert_clean(unknown_input)
    assert graphql_messages(unknown_input) == [
        "Expected value of type 'CreateLocationInput' not to include unknown field 'mayor', "
        'found: {\n  id: 700\n  streetAddress: "a"\n  city: "b"\n  state: "c"\n'
        '  postalCode: "d"\n  mayor: "e"\n}.',
    ]

    unknown_variable_field = await http.post("/graphql", json={
        "query": CREATE_LOCATION, "variables": {"input": {
            "id": 700, "streetAddress": "a", "city": "b", "state": "c", "postalCode": "d",
            "mayor": "e",
        }},
    })
    assert_clean(unknown_variable_field)
    assert graphql_messages(unknown_variable_field) == [
        "Variable '$input' has invalid value: Expected value of type 'CreateLocationInput' "
        "not to include unknown field 'mayor', found: {'id': 700, 'streetAddress': 'a', "
        "'city': 'b', 'state': 'c', 'postalCode': 'd', 'mayor': 'e'}.",
    ]

    wrong_type = await http.post("/graphql", json={
        "query": "query ($id: Int!) { location(id: $id) { id } }", "variables": {"id": "seven"},
    })
    assert_clean(wrong_type)
    assert graphql_messages(wrong_type) == [
        "Variable '$id' has invalid value: Int cannot represent non-integer value: 'seven'",
    ]

    bad_date = await http.post("/graphql", json={
        "query": CREATE_EMPLOYEE, "variables": {"input": {
            "id": 700, "firstName": "a", "lastName": "b", "dateOfBirth": "not-a-date",
            "jobTitle": "c", "locationId": 1,
        }},
    })
    assert_clean(bad_date)
    [date_message] = graphql_messages(bad_date)
    assert date_message.startswith(
        "Variable '$input' has invalid value at .dateOfBirth: Value cannot represent a Date"
    )

    syntax = await http.post("/graphql", json={"query": "{ locations { id "})
    assert_clean(syntax)
    assert graphql_messages(syntax) == ["Syntax Error: Expected Name, found <EOF>."]

    huge = await http.post("/graphql", json={
        "query": CREATE_LOCATION, "variables": {"input": {
            "id": 700, "streetAddress": "s" * 10_000, "city": "c", "state": "s",
            "postalCode": "p",
        }},
    })
    assert_clean(huge)
    assert huge.status_code == 200
    result = huge.json()["data"]["createLocation"]
    assert result["__typename"] == "ValidationError"
    assert result["message"] == "The Street Address must be at most 200 characters."

    control = await api.create_location(700, city="Spring\x00field")
    assert field_errors(control) == [("city", "The City cannot contain control characters.")]

    bad_cursor = await api.graphql_errors(EMPLOYEES, after="not-a-cursor")
    assert [(e["message"], e["extensions"]) for e in bad_cursor] == [
        ("after is not a cursor this API gave out.", {"code": "BAD_USER_INPUT"}),
    ]
    too_many = await api.graphql_errors(EMPLOYEES, first=501)
    assert [(e["message"], e["extensions"]) for e in too_many] == [
        ("first must be between 0 and 500.", {"code": "BAD_USER_INPUT"}),
    ]

    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).json() == {
        "ready": True, "event_store": True, "redis": True,
    }
    assert await api.location(700) is None
    assert await api.head() == head


# 8. Read-your-writes.


async def test_min_position_reads_your_writes_and_a_future_position_is_a_stale_read(
    api: Api,
) -> None:
    assert (await api.create_location(801))["__typename"] == "LocationPayload"
    hired = await api.create_employee(801, 801, jobTitle="Server")
    changed = (await api.run(
        CHANGE_TITLE, input={"employeeId": 801, "jobTitle": "Shift Manager"},
    ))["changeEmployeeJobTitle"]
    assert changed["__typename"] == "EmployeePayload"
    assert changed["position"] == hired["position"] + 1
    assert changed["employee"]["jobTitle"] == "Shift Manager"

    seen = await api.employee(801, minPosition=changed["position"])
    assert seen is not None
    assert (seen["jobTitle"], seen["version"]) == ("Shift Manager", 3)
    location = await api.location(801, minPosition=changed["position"])
    assert location is not None
    assert location["employees"] == [{"id": 801, "locationId": 801}]

    projected = (await api.run(STATUS))["projectionStatus"]
    far = 10**9
    errors = await api.graphql_errors(EMPLOYEE, id=801, minPosition=far)
    assert [(e["message"], e["extensions"]) for e in errors] == [(
        f"The read model has not reached position {far} within 1 s.",
        {"code": "STALE_READ_MODEL", "position": projected["position"]},
    )]
    assert errors[0]["path"] == ["employee"]


# 9. Pagination.


async def test_employees_are_paginated_by_id_with_cursors_and_filtered_by_location(
    fresh_api: Api,
) -> None:
    api = fresh_api
    for location_id in (1, 2):
        assert (await api.create_location(location_id))["__typename"] == "LocationPayload"
    for employee_id in (5, 3, 1, 4, 2):  # created out of order on purpose
        location_id = 1 if employee_id % 2 else 2
        hired = await api.create_employee(employee_id, location_id, firstName=f"E{employee_id}")
        assert hired["__typename"] == "EmployeePayload"

    seen: list[list[int]] = []
    cursors: list[str] = []
    after: str | None = None
    pages: list[dict[str, Any]] = []
    while True:
        page = (await api.run(EMPLOYEES, first=2, after=after))["employees"]
        pages.append(page)
        seen.append([edge["node"]["id"] for edge in page["edges"]])
        cursors += [edge["cursor"] for edge in page["edges"]]
        assert page["totalCount"] == 5
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [[1, 2], [3, 4], [5]]
    assert [p["pageInfo"]["hasNextPage"] for p in pages] == [True, True, False]
    assert len(set(cursors)) == 5
    assert [e["node"]["firstName"] for p in pages for e in p["edges"]] == [
        "E1", "E2", "E3", "E4", "E5",
    ]

    # A cursor is stable: resuming after the second employee gives the rest, in order.
    rest = (await api.run(EMPLOYEES, first=50, after=cursors[1]))["employees"]
    assert [edge["node"]["id"] for edge in rest["edges"]] == [3, 4, 5]
    assert rest["pageInfo"] == {"hasNextPage": False, "endCursor": cursors[4]}

    empty = (await api.run(EMPLOYEES, first=0))["employees"]
    assert empty == {
        "edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}, "totalCount": 5,
    }

    odd = (await api.run(EMPLOYEES, locationId=1, first=2))["employees"]
    assert [edge["node"]["id"] for edge in odd["edges"]] == [1, 3]
    assert odd["pageInfo"]["hasNextPage"] is True
    assert odd["totalCount"] == 3
    odd_rest = (await api.run(
        EMPLOYEES, locationId=1, first=2, after=odd["pageInfo"]["endCursor"],
    ))["employees"]
    assert [edge["node"]["id"] for edge in odd_rest["edges"]] == [5]
    assert odd_rest["pageInfo"]["hasNextPage"] is False

    even = (await api.run(EMPLOYEES, locationId=2))["employees"]
    assert [(e["node"]["id"], e["node"]["locationId"]) for e in even["edges"]] == [(2, 2), (4, 2)]
    assert even["totalCount"] == 2
    nowhere = (await api.run(EMPLOYEES, locationId=99))["employees"]
    assert nowhere == {
        "edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}, "totalCount": 0,
    }


# 10. GraphiQL, metrics and request ids.


async def test_graphiql_is_served_to_browsers(api: Api) -> None:
    """The service's own page (tests/e2e/test_graphiql.py drives it in a browser), whose
    scripts and styles the service serves too, and a policy that lets it load nothing else."""
    page = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<title>GraphiQL · restaurant network</title>" in page.text
    assets = re.findall(r'(?:src|href)="(/[^"]*)"', page.text)
    assert len(assets) >= 2, page.text  # its script and stylesheet
    for path in assets:
        assert path.startswith("/graphiql/assets/"), path
        asset = await api.http.get(path)
        assert asset.status_code == 200, path
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    missing = await api.http.get("/graphiql/assets/no-such-file.js")
    assert missing.status_code == 404


async def test_metrics_are_prometheus_text_and_count_appends(api: Api) -> None:
    def sample(text: str, name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert match, f"{name} missing from /metrics"
        return float(match.group(1))

    before = await api.http.get("/metrics")
    assert before.status_code == 200
    assert re.fullmatch(
        r"text/plain; version=\d+\.\d+\.\d+; charset=utf-8", before.headers["content-type"]
    )
    assert "# TYPE cqrs_appends_total counter" in before.text
    assert "# TYPE cqrs_projection_position gauge" in before.text
    appends = sample(before.text, "cqrs_appends_total")

    made = await api.create_location(1001)
    assert made["__typename"] == "LocationPayload"
    after = (await api.http.get("/metrics")).text
    assert sample(after, "cqrs_appends_total") == appends + 1
    assert sample(after, "cqrs_projection_position") == made["position"]


async def test_request_id_is_echoed_and_generated_when_missing(api: Api) -> None:
    given = await api.http.get("/healthz", headers={"X-Request-ID": "trace-me-42"})
    assert given.headers["x-request-id"] == "trace-me-42"
    made = await api.http.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert json.loads(made.text) == {"status": "ok"}
