"""Authentication and roles against the real service (`python -m app serve`, AUTH_MODE=token).

Static API keys and JWTs (HS256 with a shared secret, RS256 with a public key) over HTTP and
websockets: no or bad token is UNAUTHENTICATED, a reader's mutation is FORBIDDEN and writes
nothing, and a writer's events carry the writer as their actor.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.harness.server import RunningServer, running_server

READER_KEY = "reader-secret-0123456789"
WRITER_KEY = "writer-secret-0123456789"
UNNAMED_KEY = "unnamed-writer-secret"
ADMIN_KEY = "admin-secret-0123456789"
JWT_SECRET = "a-shared-hs256-secret-of-at-least-32-bytes!"
ACTOR_NAME_SECRET = "the-actor-name-hmac-key-0123456789"
WAIT_SECONDS = 15.0


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


RSA_KEY = rsa_key()
OTHER_RSA_KEY = rsa_key()
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


def hs256(sub: str, expires_in: float = 600, **claims: Any) -> str:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)
    return jwt.encode({"sub": sub, "exp": exp, **claims}, JWT_SECRET, algorithm="HS256")


def rs256(sub: str, key: rsa.RSAPrivateKey = RSA_KEY, **claims: Any) -> str:
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    return jwt.encode({"sub": sub, "exp": exp, **claims}, key, algorithm="RS256")


AUTH_ENV = {
    "AUTH_MODE": "token",
    "API_KEYS": f"{READER_KEY}:reader:ci-reader,{WRITER_KEY}:writer:ci-writer,{UNNAMED_KEY}:writer,"
                f"{ADMIN_KEY}:admin:ci-admin",
    "JWT_SECRET": JWT_SECRET,
    "JWT_PUBLIC_KEY": RSA_PUBLIC_PEM,
    "ACTOR_NAME_SECRET": ACTOR_NAME_SECRET,
    "READ_MODEL_WAIT_SECONDS": "5",
}

CREATE_LOCATION = """
mutation($input: CreateLocationInput!) {
  createLocation(input: $input) {
    __typename ... on LocationPayload { position location { id } }
  }
}"""
STATUS = "{ projectionStatus { headPosition } }"
EVENTS = """
query($after: Int) { events(after: $after) { position type streamId correlationId actor } }"""


def location_input(location_id: int) -> dict[str, Any]:
    return {"id": location_id, "streetAddress": "1 Main St", "city": "Springfield",
            "state": "IL", "postalCode": "62701"}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("auth"), extra_env=AUTH_ENV) as server:
        yield server


@pytest.fixture
async def http(auth_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_server.base_url, timeout=30.0) as client:
        yield client


async def graphql(
    http: httpx.AsyncClient, query: str, token: str | None = None,
    headers: dict[str, str] | None = None, **variables: Any,
) -> dict[str, Any]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=sent
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_code(body: dict[str, Any]) -> str:
    assert body["data"] is None, body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


async def head(http: httpx.AsyncClient) -> int:
    position: int = (await graphql(http, STATUS, READER_KEY))["data"]["projectionStatus"][
        "headPosition"
    ]
    return position


async def test_no_token_is_unauthenticated_for_queries_and_mutations(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    assert error_code(await graphql(http, STATUS)) == "UNAUTHENTICATED"
    refused = await graphql(http, CREATE_LOCATION, input=location_input(201))
    assert error_code(refused) == "UNAUTHENTICATED"
    assert "Authorization" in refused["errors"][0]["message"]
    assert error_code(await graphql(http, "{ __schema { queryType { name } } }")) == (
        "UNAUTHENTICATED"
    )
    assert await head(http) == before


async def test_a_wrong_key_or_a_malformed_header_is_unauthenticated(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    assert error_code(await graphql(http, STATUS, "not-a-key")) == "UNAUTHENTICATED"
    assert error_code(await graphql(http, STATUS, WRITER_KEY + "x")) == "UNAUTHENTICATED"
    basic = await graphql(http, STATUS, headers={"Authorization": f"Basic {WRITER_KEY}"})
    assert error_code(basic) == "UNAUTHENTICATED"
    forged = await graphql(http, CREATE_LOCATION, "a.b.c", input=location_input(202))
    assert error_code(forged) == "UNAUTHENTICATED"
    assert await head(http) == before


async def test_a_reader_key_can_query_but_its_mutation_is_forbidden_and_writes_nothing(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    refused = await graphql(http, CREATE_LOCATION, READER_KEY, input=location_input(203))
    assert error_code(refused) == "FORBIDDEN"
    assert await head(http) == before
    found = await graphql(http, "query($id: Int!) { location(id: $id) { id } }", READER_KEY,
                          id=203)
    assert found == {"data": {"location": None}}


FORGET = """
mutation($input: ForgetEmployeeInput!) {
  forgetEmployee(input: $input) {
    __typename ... on ForgetEmployeePayload { employeeId position }
  }
}"""
HIRE = """
mutation($input: CreateEmployeeInput!) {
  createEmployee(input: $input) { __typename ... on EmployeePayload { position } }
}"""


async def test_only_an_admin_may_forget_an_employee_and_an_admin_may_write_too(
    http: httpx.AsyncClient,
) -> None:
    created = await graphql(http, CREATE_LOCATION, ADMIN_KEY, input=location_input(290))
    assert created["data"]["createLocation"]["location"] == {"id": 290}
    hired = await graphql(http, HIRE, ADMIN_KEY, input={
        "id": 290, "firstName": "Ana", "lastName": "Smith", "dateOfBirth": "1990-05-17",
        "jobTitle": "Cook", "locationId": 290})
    assert hired["data"]["createEmployee"]["__typename"] == "EmployeePayload"
    before = await head(http)
    for token in (READER_KEY, WRITER_KEY, hs256("someone", roles=["writer"])):
        refused = await graphql(http, FORGET, token, input={"employeeId": 290})
        assert error_code(refused) == "FORBIDDEN"
    assert await head(http) == before
    forgot = await graphql(http, FORGET, hs256("dpo", roles=["admin"]),
                           input={"employeeId": 290})
    assert forgot["data"]["forgetEmployee"] == {
        "__typename": "ForgetEmployeePayload", "employeeId": 290, "position": before + 1}
    events = (await graphql(http, EVENTS, ADMIN_KEY, after=before))["data"]["events"]
    assert [(e["type"], e["actor"]) for e in events] == [("EmployeePersonalDataErased", "dpo")]


async def test_a_writer_key_writes_and_its_name_is_the_actor_of_the_events(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    created = await graphql(
        http, CREATE_LOCATION, WRITER_KEY, headers={"X-Request-ID": "auth-writer-204"},
        input=location_input(204),
    )
    assert created["data"]["createLocation"]["location"] == {"id": 204}
    events = (await graphql(http, EVENTS, WRITER_KEY, after=before))["data"]["events"]
    assert [(e["type"], e["streamId"], e["actor"], e["correlationId"]) for e in events] == [
        ("LocationCreated", "location-204", "ci-writer", "auth-writer-204")
    ]


async def test_an_unnamed_key_is_recorded_by_a_name_that_does_not_reveal_it(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    await graphql(http, CREATE_LOCATION, UNNAMED_KEY, input=location_input(205))
    (event,) = (await graphql(http, EVENTS, UNNAMED_KEY, after=before))["data"]["events"]
    # an HMAC under ACTOR_NAME_SECRET: without that secret no one can test a guessed key
    digest = hmac.new(ACTOR_NAME_SECRET.encode(), UNNAMED_KEY.encode(), hashlib.sha256)
    assert event["actor"] == "key-" + digest.hexdigest()[:16]
    assert hashlib.sha256(UNNAMED_KEY.encode()).hexdigest()[:8] not in event["actor"]


async def test_an_hs256_jwt_with_the_writer_role_writes_as_its_subject(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    token = hs256("alice", roles=["writer"])
    created = await graphql(http, CREATE_LOCATION, token, input=location_input(206))
    assert created["data"]["createLocation"]["__typename"] == "LocationPayload"
    (event,) = (await graphql(http, EVENTS, token, after=before))["data"]["events"]
    assert event["actor"] == "alice"


async def test_a_jwt_scope_of_reader_may_query_but_not_mutate(http: httpx.AsyncClient) -> None:
    before = await head(http)
    token = hs256("bob", scope="openid reader")
    assert "data" in await graphql(http, STATUS, token)
    refused = await graphql(http, CREATE_LOCATION, token, input=location_input(207))
    assert error_code(refused) == "FORBIDDEN"
    no_roles = hs256("carol")
    assert error_code(await graphql(http, STATUS, no_roles)) == "FORBIDDEN"
    assert await head(http) == before


async def test_an_expired_jwt_is_refused(http: httpx.AsyncClient) -> None:
    before = await head(http)
    expired = hs256("alice", expires_in=-60, roles="writer")
    refused = await graphql(http, CREATE_LOCATION, expired, input=location_input(208))
    assert error_code(refused) == "UNAUTHENTICATED"
    assert "expired" in refused["errors"][0]["message"]
    assert await head(http) == before


async def test_a_jwt_without_exp_or_with_a_wrong_signature_is_refused(
    http: httpx.AsyncClient,
) -> None:
    no_exp = jwt.encode({"sub": "mallory", "roles": ["writer"]}, JWT_SECRET, algorithm="HS256")
    assert error_code(await graphql(http, STATUS, no_exp)) == "UNAUTHENTICATED"
    wrong_secret = jwt.encode(
        {"sub": "mallory", "roles": ["writer"],
         "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)},
        "another-secret-of-at-least-32-bytes-long", algorithm="HS256",
    )
    assert error_code(await graphql(http, STATUS, wrong_secret)) == "UNAUTHENTICATED"
    unsigned = ".".join(  # the "alg: none" forgery
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "none", "typ": "JWT"},
                     {"sub": "mallory", "roles": ["writer"], "exp": 4102444800})
    ) + "."
    assert error_code(await graphql(http, STATUS, unsigned)) == "UNAUTHENTICATED"
    other_rsa = rs256("mallory", key=OTHER_RSA_KEY, roles=["writer"])
    assert error_code(await graphql(http, STATUS, other_rsa)) == "UNAUTHENTICATED"


async def test_an_rs256_jwt_verified_with_the_public_key_writes_as_its_subject(
    http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    token = rs256("service-account-7", roles="writer")
    created = await graphql(http, CREATE_LOCATION, token, input=location_input(209))
    assert created["data"]["createLocation"]["__typename"] == "LocationPayload"
    (event,) = (await graphql(http, EVENTS, token, after=before))["data"]["events"]
    assert event["actor"] == "service-account-7"


# Websockets: the token travels in connection_init.

SUBSCRIPTION = "subscription { locationChanged { locationId kind } }"


async def ws_init(server: RunningServer, payload: dict[str, Any] | None) -> Any:
    ws = await connect(server.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    await ws.send(json.dumps(message))
    return ws


async def test_a_websocket_without_a_token_is_closed_with_4403(
    auth_server: RunningServer,
) -> None:
    for payload in (None, {}, {"token": "not-a-key"},
                    {"Authorization": f"Bearer {hs256('x', expires_in=-5, roles='reader')}"}):
        ws = await ws_init(auth_server, payload)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
        assert ws.close_code == 4403, payload
        await ws.close()


async def test_a_legacy_graphql_ws_client_without_a_token_gets_a_connection_error(
    auth_server: RunningServer,
) -> None:
    async with connect(auth_server.ws_url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        assert message["type"] == "connection_error"
        assert message["payload"]["code"] == "UNAUTHENTICATED"


async def test_a_reader_websocket_subscribes_and_sees_a_writers_change_but_cannot_mutate(
    auth_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    ws = await ws_init(auth_server, {"Authorization": f"Bearer {READER_KEY}"})
    try:
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)) == {
            "type": "connection_ack"
        }
        await ws.send(json.dumps({"id": "m", "type": "subscribe", "payload": {
            "query": CREATE_LOCATION, "variables": {"input": location_input(210)}}}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        assert refused["id"] == "m"
        errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN", refused

        await ws.send(json.dumps({"id": "s", "type": "subscribe",
                                  "payload": {"query": SUBSCRIPTION}}))
        await ws.send(json.dumps({"type": "ping"}))
        while (message := json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)))[
            "type"
        ] != "pong":
            assert message["type"] == "complete" and message["id"] == "m", message
        created = await graphql(http, CREATE_LOCATION, hs256("dora", roles=["writer"]),
                                input=location_input(211))
        assert created["data"]["createLocation"]["__typename"] == "LocationPayload"
        while (message := json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)))[
            "type"
        ] == "complete":
            pass
        assert message == {"id": "s", "type": "next", "payload": {
            "data": {"locationChanged": {"locationId": 211, "kind": "CREATED"}}}}
    finally:
        await ws.close()
    assert (await graphql(http, "query { location(id: 210) { id } }", READER_KEY)) == {
        "data": {"location": None}
    }


async def test_a_websocket_with_a_writer_jwt_token_may_mutate_as_its_subject(
    auth_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    before = await head(http)
    ws = await ws_init(auth_server, {"token": hs256("erin", roles=["writer"])})
    try:
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["type"] == (
            "connection_ack"
        )
        await ws.send(json.dumps({"id": "m", "type": "subscribe", "payload": {
            "query": CREATE_LOCATION, "variables": {"input": location_input(212)}}}))
        result = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        assert result["type"] == "next", result
        assert result["payload"]["data"]["createLocation"]["location"] == {"id": 212}
    finally:
        await ws.close()
    (event,) = (await graphql(http, EVENTS, READER_KEY, after=before))["data"]["events"]
    assert event["actor"] == "erin"
