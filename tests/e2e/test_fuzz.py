"""Fuzzing every mutation and query of the real service (`python -m app serve`) over HTTP.

Hypothesis sends GraphQL variables full of unicode, control characters, huge numbers, nulls,
deep nesting and huge lists. The server never answers 5xx, stays healthy, and the event log grows
only when a mutation answered with its payload type (a new command; a replayed idempotency key
answers with the original position and writes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.server import RunningServer, running_server

SERVER_ENV = {"READ_MODEL_WAIT_SECONDS": "0.3"}  # minPosition beyond the head waits this long
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                             HealthCheck.data_too_large],
)

# Values of every JSON shape, nasty ones included.
text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "\u202e", "\ud7ff", "'; DROP TABLE events; --", "{{7*7}}", " " * 3,
     "\x1b[31m", "\n\r\t", "é" * 300]
)
huge_ints = st.sampled_from([2**31, -(2**31) - 1, 2**63, 2**70, -(2**70), 10**30])
scalars = (
    st.none() | st.booleans() | st.integers(-5, 40) | huge_ints | text
    | st.floats(allow_nan=False, allow_infinity=False)
)


def nested(depth: int) -> Any:
    value: Any = 1
    for n in range(depth):
        value = [value] if n % 2 else {"x": value}
    return value


json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=20,
) | st.integers(50, 400).map(nested) | st.sampled_from(
    [list(range(50_000)), ["x" * 64] * 5_000, "y" * 200_000]
)
ids = st.integers(1, 12) | st.none() | json_values
names = st.sampled_from(["Ana", "Springfield", "IL", "62701", "Line Cook"]) | text | json_values
dates = st.sampled_from(["1990-05-17", "2001-02-29", "1899-12-31", "9999-12-31", "2025-13-01",
                         "1990-05-17T00:00:00"]) | json_values
datetimes = st.sampled_from(
    ["2020-01-01T00:00:00Z", "2999-01-01T00:00:00+14:00", "0001-01-01T00:00:00", "yesterday"]
) | st.none() | json_values
keys = st.none() | text | json_values


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field value, or the field missing altogether (a marker dropped before sending)."""
    return strategy | st.just(MISSING)


MISSING = object()


def input_object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.fixed_dictionaries({name: maybe(s) for name, s in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not MISSING}
    )
    return objects | json_values  # sometimes the input itself is not an object


plain = st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30)
location_ids, employee_ids = st.integers(1, 15), st.integers(1, 30)


def valid(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Inputs a command may well accept: the invariant must hold for accepted ones too."""
    return st.fixed_dictionaries(fields)


VALID: dict[str, st.SearchStrategy[Any]] = {
    "createLocation": valid(id=location_ids | st.none(), streetAddress=plain, city=plain,
                            state=st.just("IL"), postalCode=st.just("62701")),
    "createEmployee": valid(id=employee_ids | st.none(), firstName=plain, lastName=plain,
                            dateOfBirth=st.just("1990-05-17"), jobTitle=plain,
                            locationId=location_ids),
    "assignEmployeeToLocation": valid(employeeId=employee_ids, locationId=location_ids),
    "changeEmployeeJobTitle": valid(employeeId=employee_ids, jobTitle=plain),
    "terminateEmployee": valid(employeeId=employee_ids),
}

PAYLOADS = {"createLocation": "LocationPayload", "createEmployee": "EmployeePayload",
            "assignEmployeeToLocation": "EmployeePayload",
            "changeEmployeeJobTitle": "EmployeePayload", "terminateEmployee": "TerminatePayload"}
MUTATIONS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "createLocation": ("CreateLocationInput", input_object(
        id=ids, streetAddress=names, city=names, state=names, postalCode=names,
        idempotencyKey=keys)),
    "createEmployee": ("CreateEmployeeInput", input_object(
        id=ids, firstName=names, lastName=names, dateOfBirth=dates, jobTitle=names,
        locationId=ids, idempotencyKey=keys)),
    "assignEmployeeToLocation": ("AssignEmployeeToLocationInput", input_object(
        employeeId=ids, locationId=ids, expectedVersion=ids, idempotencyKey=keys)),
    "changeEmployeeJobTitle": ("ChangeEmployeeJobTitleInput", input_object(
        employeeId=ids, jobTitle=names, expectedVersion=ids, idempotencyKey=keys)),
    "terminateEmployee": ("TerminateEmployeeInput", input_object(
        employeeId=ids, expectedVersion=ids, idempotencyKey=keys)),
}

POINT = "$asOf: DateTime, $atPosition: Int, $minPosition: Int"
AT = "asOf: $asOf, atPosition: $atPosition, minPosition: $minPosition"
QUERIES: dict[str, str] = {
    "location": f"query($id: Int!, {POINT}) {{ location(id: $id, {AT}) "
                "{ id employeeCount employees { id location { id } } } }",
    "locations": f"query({POINT}) {{ locations({AT}) {{ id city }} }}",
    "employee": f"query($id: Int!, {POINT}) {{ employee(id: $id, {AT}) "
                "{ id jobTitle location { id } } }",
    "employees": f"query($locationId: Int, $first: Int, $after: String, {POINT}) "
                 f"{{ employees(locationId: $locationId, first: $first, after: $after, {AT}) "
                 "{ totalCount edges { cursor node { id } } pageInfo { hasNextPage } } }",
    "events": "query($after: Int, $first: Int, $streamId: String) "
              "{ events(after: $after, first: $first, streamId: $streamId) { position } }",
    "projectionStatus": "query { projectionStatus { position headPosition lag } }",
}
query_variables = st.fixed_dictionaries({}, optional={
    "id": ids, "asOf": datetimes, "atPosition": ids | huge_ints, "minPosition": ids | huge_ints,
    "locationId": ids, "first": ids | st.integers(-10, 1000), "after": keys,
    "streamId": keys,
})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("fuzz"), extra_env=SERVER_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


class Log:
    """The event log as the client has seen it so far."""

    def __init__(self, http: httpx.Client) -> None:
        self.http, self.head = http, 0
        self.new_events()

    def new_events(self) -> list[int]:
        """Positions appended since the last call (the store, not the read model)."""
        found: list[int] = []
        while True:
            body = post(self.http, "query($after: Int) { events(after: $after, first: 500) "
                        "{ position } }", {"after": self.head})
            page = [event["position"] for event in body["data"]["events"]]
            found += page
            if page:
                self.head = page[-1]
            if len(page) < 500:
                return found


def post(http: httpx.Client, query: str, variables: Any) -> dict[str, Any]:
    response = http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
    assert "INTERNAL_SERVER_ERROR" not in codes, body  # a masked bug is a crash too
    return body


@pytest.fixture(scope="module")
def log(http: httpx.Client) -> Log:
    return Log(http)


@pytest.mark.parametrize("mutation", list(MUTATIONS))  # creations first
def test_fuzzed_mutations_write_only_when_accepted(
    mutation: str, http: httpx.Client, log: Log
) -> None:
    input_type, inputs = MUTATIONS[mutation]
    result_fields = f"__typename ... on Error {{ code }} ... on {PAYLOADS[mutation]} {{ position }}"
    query = f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ {result_fields} }} }}"

    @FUZZ
    @given(value=VALID[mutation] | inputs)
    def check(value: Any) -> None:
        before = log.head
        body = post(http, query, {"input": value})
        appended = log.new_events()
        for error in body.get("errors", []):  # the operation is valid: only its input is refused
            assert error["message"].startswith("Variable '$input'") or (
                error.get("extensions", {}).get("code")
            ), body
        result = (body.get("data") or {}).get(mutation)
        if result is not None and result["__typename"].endswith("Payload"):
            accepted.append(result["position"])
            if result["position"] > before:  # a new command, not a replayed idempotency key
                assert appended and appended[-1] == result["position"], (body, appended)
            else:
                assert appended == [], (body, appended)
        else:
            assert appended == [], (body, appended)

    accepted: list[int] = []
    check()
    print(f"{mutation}: {len(accepted)} accepted")  # visible with -s
    assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize("query_name", sorted(QUERIES))
def test_fuzzed_queries_never_fail_the_server_nor_write(
    query_name: str, http: httpx.Client, log: Log
) -> None:
    query = QUERIES[query_name]

    @FUZZ
    @given(variables=query_variables)
    def check(variables: dict[str, Any]) -> None:
        post(http, query, variables)
        assert log.new_events() == []

    check()
    assert http.get("/healthz").status_code == 200


@FUZZ
@given(body=st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode)
       | json_values.map(lambda v: httpx.Request("POST", "/", json=v).content))
def test_fuzzed_request_bodies_never_fail_the_server(http: httpx.Client, body: bytes) -> None:
    for content_type in ("application/json", "text/plain", "multipart/form-data"):
        response = http.post("/graphql", content=body, headers={"content-type": content_type})
        assert response.status_code < 500, response.text
