"""Every error the service answers over HTTP carries `extensions.code` (DESIGN §7.2).

One served process (`python -m app serve`, AUTH_MODE=token, small limits) gets one example of
each kind of refusal: from the HTTP layer (a head too slow, a body too large, a body that is not
JSON), from parsing and validation, from coercing values (a bad Date inline and in a variable),
from authentication and roles, and from resolvers. Each answer is JSON whose every error has the
expected code; the server logs no ERROR and no traceback for any of them. The same examples are
the table in docs/api.md#errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.harness.server import RunningServer, running_server
from tests.harness.ws_support import WAIT_SECONDS, raw_connect, raw_subscribe

READER_KEY = "reader-secret-0123456789"
WRITER_KEY = "writer-secret-0123456789"
ENV = {
    "AUTH_MODE": "token",
    "API_KEYS": f"{READER_KEY}:reader:ci-reader,{WRITER_KEY}:writer:ci-writer",
    "READ_MODEL_WAIT_SECONDS": "0.5",
    "HEADER_TIMEOUT_SECONDS": "1",
    "MAX_BODY_BYTES": "20000",
    "MAX_QUERY_TOKENS": "400",
    "MAX_ALIASES": "5",
    "MAX_QUERY_DEPTH": "6",
    "MAX_QUERY_COST": "1000",
    "ALLOWED_HOSTS": "127.0.0.1",
}
WRITER = {"Authorization": f"Bearer {WRITER_KEY}"}
READER = {"Authorization": f"Bearer {READER_KEY}"}
CREATE_LOCATION = """mutation($input: CreateLocationInput!) {
  createLocation(input: $input) { __typename ... on LocationPayload { position } } }"""
HIRE = """mutation($d: Date!) { createEmployee(input: {firstName: "A", lastName: "B",
  dateOfBirth: $d, jobTitle: "Cook", locationId: 1}) { __typename } }"""
ERRORS_IN_LOG = ('"level": "ERROR"', "Exception in ASGI application", "Traceback")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("error-codes"), extra_env=ENV) as server:
        yield server


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=WRITER, timeout=30) as client:
        yield client


def codes(response: httpx.Response, status: int = 200) -> list[str]:
    """The codes of a JSON error answer, after checking that every error has one."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert body["data"] is None, body
    assert body["errors"], body
    for error in body["errors"]:
        assert isinstance(error["extensions"]["code"], str), error
    return sorted({error["extensions"]["code"] for error in body["errors"]})


async def post(http: httpx.AsyncClient, query: str, **variables: Any) -> httpx.Response:
    return await http.post("/graphql", json={"query": query, "variables": variables})


def nested(depth: int) -> str:
    return "{ locations { " + "employees { location { " * (depth // 2) + "id" + " } }" * (
        depth // 2) + " } }"


async def test_parse_and_validation_errors_have_codes(http: httpx.AsyncClient) -> None:
    assert codes(await post(http, "{ locations { id }")) == ["GRAPHQL_PARSE_FAILED"]
    many_tokens = "{ " + " ".join(f"a{i}: __typename" for i in range(300)) + " }"
    assert codes(await post(http, many_tokens)) == ["GRAPHQL_PARSE_FAILED"]
    assert codes(await post(http, "{ locations { salary } }")) == ["GRAPHQL_VALIDATION_FAILED"]
    assert codes(await post(http, nested(10))) == ["GRAPHQL_VALIDATION_FAILED"]
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(6)) + " }"
    assert codes(await post(http, aliases)) == ["GRAPHQL_VALIDATION_FAILED"]
    costly = "{ employees(first: 500) { edges { node { id location { id city } } } } }"
    over_cost = await post(http, costly)
    assert codes(over_cost) == ["GRAPHQL_VALIDATION_FAILED"]
    assert over_cost.json()["errors"][0]["extensions"]["maxCost"] == 1000
    subscription = await post(http, "subscription { events { position } }")
    assert codes(subscription) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_requests_the_library_refuses_get_json_errors(http: httpx.AsyncClient) -> None:
    """Before our schema runs, strawberry refuses these; the answer is a GraphQL error too."""
    json_type = {"Content-Type": "application/json"}
    for body in (b'{"query": "{ __typename }"', b'"just a string"', b"[1, 2]",
                 b'{"query": 5}', b'{"query": "{ __typename }", "variables": [1]}'):
        response = await http.post("/graphql", content=body, headers=json_type)
        assert codes(response, 400) == ["BAD_REQUEST"], body
    plain = await http.post("/graphql", content=b"{ __typename }",
                            headers={"Content-Type": "text/plain"})
    assert codes(plain, 400) == ["BAD_REQUEST"]
    assert codes(await http.put("/graphql", json={}), 405) == ["BAD_REQUEST"]
    assert codes(await http.post("/graphql", json={}), 400) == ["GRAPHQL_VALIDATION_FAILED"]
    mutation_by_get = await http.get("/graphql", params={"query": "mutation { __typename }"})
    assert codes(mutation_by_get, 400) == ["GRAPHQL_VALIDATION_FAILED"]
    unknown_operation = await http.post(
        "/graphql", json={"query": "query A { __typename }", "operationName": "B"}
    )
    assert codes(unknown_operation, 400) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_values_that_do_not_coerce_are_bad_user_input(http: httpx.AsyncClient) -> None:
    inline = HIRE.replace("($d: Date!)", "").replace("$d", '"1990-13-45"')
    assert codes(await post(http, inline)) == ["BAD_USER_INPUT"]
    assert codes(await post(http, HIRE, d="not a date")) == ["BAD_USER_INPUT"]
    by_id = "query($id: Int!) { location(id: $id) { id } }"
    assert codes(await post(http, by_id, id="one")) == ["BAD_USER_INPUT"]
    assert codes(await post(http, by_id, id=2**40)) == ["BAD_USER_INPUT"]
    assert codes(await post(http, by_id)) == ["BAD_USER_INPUT"]
    as_of = "query($t: DateTime) { locations(asOf: $t) { id } }"
    assert codes(await post(http, as_of, t="yesterday")) == ["BAD_USER_INPUT"]
    assert codes(await post(http, '{ locations(asOf: "yesterday") { id } }')) == [
        "BAD_USER_INPUT"
    ]


async def test_resolver_refusals_have_codes(http: httpx.AsyncClient) -> None:
    naive = await post(http, "query($t: DateTime) { locations(asOf: $t) { id } }",
                       t="2030-01-01T12:00:00")
    assert codes(naive) == ["BAD_USER_INPUT"]
    assert "time zone" in naive.json()["errors"][0]["message"]
    aware = await post(http, "query($t: DateTime) { locations(asOf: $t) { id } }",
                       t="2030-01-01T12:00:00Z")
    assert aware.json() == {"data": {"locations": []}}
    both = await post(http, "{ locations(asOf: \"2030-01-01T00:00:00Z\", atPosition: 1) { id } }")
    assert codes(both) == ["BAD_USER_INPUT"]
    assert codes(await post(http, "{ employees(first: 501) { totalCount } }")) == [
        "BAD_USER_INPUT"
    ]
    stale = await post(http, "{ locations(minPosition: 1000000) { id } }")
    assert codes(stale) == ["STALE_READ_MODEL"]

    location = {"id": 41, "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
                "postalCode": "62701", "idempotencyKey": "k-41"}
    first = await post(http, CREATE_LOCATION, input=location)
    assert first.json()["data"]["createLocation"]["__typename"] == "LocationPayload", first.text
    reused = await post(http, CREATE_LOCATION, input={**location, "city": "Shelbyville"})
    assert codes(reused) == ["IDEMPOTENCY_KEY_REUSED"]


async def test_authentication_and_roles_have_codes(http: httpx.AsyncClient) -> None:
    anonymous = await http.post("/graphql", json={"query": "{ locations { id } }"},
                                headers={"Authorization": ""})
    assert codes(anonymous) == ["UNAUTHENTICATED"]
    wrong_key = await http.post("/graphql", json={"query": "{ locations { id } }"},
                                headers={"Authorization": "Bearer not-a-key"})
    assert codes(wrong_key) == ["UNAUTHENTICATED"]
    reader_writes = await http.post("/graphql", headers=READER, json={
        "query": CREATE_LOCATION, "variables": {"input": {
            "streetAddress": "2 Main St", "city": "Springfield", "state": "IL",
            "postalCode": "62701"}},
    })
    assert codes(reader_writes) == ["FORBIDDEN"]


async def test_http_limits_and_hosts_answer_json_with_codes(
    http: httpx.AsyncClient, server: RunningServer
) -> None:
    too_large = await http.post("/graphql", content=b" " * 20_001,
                                headers={"Content-Type": "application/json"})
    assert codes(too_large, 413) == ["REQUEST_TOO_LARGE"]
    other_host = await http.post("/graphql", json={"query": "{ __typename }"},
                                 headers={"Host": "evil.example.com"})
    assert codes(other_host, 400) == ["HOST_NOT_ALLOWED"]
    status, body = await slow_head(server)
    assert status == 408
    error = json.loads(body)["errors"][0]
    assert error["extensions"]["code"] == "REQUEST_TIMEOUT", body


async def slow_head(server: RunningServer) -> tuple[int, bytes]:
    """Begin a request head and never finish it: the answer once HEADER_TIMEOUT_SECONDS pass."""
    url = urlsplit(server.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(f"POST /graphql HTTP/1.1\r\nHost: {url.netloc}\r\nContent-".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)  # until the server closes it
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_operations_on_a_websocket_get_the_same_codes(server: RunningServer) -> None:
    """graphql-transport-ws: a query's errors come in `next`, a subscription's in `error`."""
    ws = await raw_connect(server.ws_url, payload={"Authorization": f"Bearer {READER_KEY}"})
    try:
        operations = {
            "query": ("query($id: Int!) { location(id: $id) { id } }", {"id": "one"}),
            "naive": ("query($t: DateTime) { locations(asOf: $t) { id } }",
                      {"t": "2030-01-01T12:00:00"}),
            "variable": ("subscription($id: Int) { locationChanged(id: $id) { position } }",
                         {"id": "one"}),
            "literal": ('subscription { locationChanged(id: "one") { position } }', {}),
            "unknown": ("subscription { salaries }", {}),
        }
        for op_id, (query, variables) in operations.items():
            await raw_subscribe(ws, op_id, query, **variables)
        found: dict[str, list[str]] = {}
        async with asyncio.timeout(WAIT_SECONDS):
            while len(found) < len(operations):
                message = json.loads(await ws.recv())
                if message["type"] == "next":
                    errors = message["payload"]["errors"]
                elif message["type"] == "error":
                    errors = message["payload"]
                else:
                    continue
                found[message["id"]] = sorted(e["extensions"]["code"] for e in errors)
    finally:
        await ws.close()
    assert found == {
        "query": ["BAD_USER_INPUT"], "naive": ["BAD_USER_INPUT"],
        "variable": ["BAD_USER_INPUT"], "literal": ["BAD_USER_INPUT"],
        "unknown": ["GRAPHQL_VALIDATION_FAILED"],
    }


async def test_refused_values_do_not_reach_the_log(
    http: httpx.AsyncClient, server: RunningServer
) -> None:
    """graphql-core's messages quote what they refuse; the client sees them, the log does not."""
    name = "Zelda Quixotic"
    hire = "mutation($i: CreateEmployeeInput!) { createEmployee(input: $i) { __typename } }"
    by_variable = await post(http, hire, i={"firstName": name, "dateOfBirth": "1990-01-01"})
    assert codes(by_variable) == ["BAD_USER_INPUT"]
    literal = ('mutation { createEmployee(input: {firstName: "' + name + '", '
               'dateOfBirth: "1990-01-01"}) { __typename } }')
    by_literal = await post(http, literal)
    assert codes(by_literal) == ["BAD_USER_INPUT"]
    assert name in by_variable.text and name in by_literal.text  # quoted back to the client
    log = server.log_path.read_text(errors="replace")
    assert "client error: BAD_USER_INPUT at 1:" in log
    assert name not in log


def test_no_refusal_logged_an_error(server: RunningServer) -> None:
    """Runs last in this module: every refusal above was the client's, none a crash."""
    log = server.log_path.read_text(errors="replace")
    for marker in ERRORS_IN_LOG:
        assert marker not in log, log[-3000:]
