"""Websockets and malformed input against the real service (`python -m app serve`, AUTH_MODE=token),
over both websocket protocols (graphql-transport-ws and the legacy graphql-ws).

A socket authenticated with a JWT ends when the token expires, whatever it is doing, and an
operation sent after the expiry never runs; a socket that never sends connection_init is
closed; a frame of any wrong shape ends the socket with the protocol's way of saying why; an
operation of a kind its transport does not carry, or a document spreading an unknown fragment,
gets a typed GraphQL error. Through all of it the server logs no error and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_auth import JWT_SECRET, graphql, hs256, location_input
from tests.harness.server import RunningServer, running_server
from tests.harness.ws_support import (
    CREATE_LOCATION,
    GRAPHQL_TRANSPORT_WS,
    GRAPHQL_WS,
    LOCATION_CHANGED,
    PROTOCOLS,
    RESULT,
    START,
    Api,
    raw_connect,
    raw_subscribe,
    until_closed,
)

READER_KEY = "ws-reader-secret-0123456789"
WRITER_KEY = "ws-writer-secret-0123456789"
INIT_TIMEOUT_SECONDS = 1.0
SERVER_ENV = {
    "AUTH_MODE": "token",
    "API_KEYS": f"{READER_KEY}:reader:ws-reader,{WRITER_KEY}:writer:ws-writer",
    "JWT_SECRET": JWT_SECRET,
    "WS_INIT_TIMEOUT_SECONDS": str(INIT_TIMEOUT_SECONDS),
    "READ_MODEL_WAIT_SECONDS": "5",
}
FAST_SECONDS = 5.0  # a close the contract times must come well within this past its moment
CLOCK_SLACK = 0.05  # the server sleeps on the monotonic clock until a wall-clock instant
ERRORS_IN_LOG = ('"level": "ERROR"', "Exception in ASGI application", "Traceback")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("ws-hardening"), extra_env=SERVER_ENV) as served:
        yield served
    log = served.log_path.read_text(errors="replace")  # all of it, now that it is complete
    for marker in ERRORS_IN_LOG:
        assert marker not in log, log[-3000:]


@pytest.fixture(autouse=True)
def no_error_logged(server: RunningServer) -> Iterator[None]:
    """Whatever a test sends, the server logs no error or traceback while it runs."""
    start = server.log_path.stat().st_size
    yield
    with server.log_path.open("rb") as log:
        log.seek(start)
        logged = log.read().decode(errors="replace")
    for marker in ERRORS_IN_LOG:
        assert marker not in logged, logged[-3000:]


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
        yield client


def expiry(token: str) -> float:
    """When a JWT expires (its `exp`, seconds since the epoch)."""
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def location(http: httpx.AsyncClient, location_id: int) -> Any:
    found = await graphql(http, "query($id: Int!) { location(id: $id) { id } }", READER_KEY,
                          id=location_id)
    return found["data"]["location"]


def location_id(base: int, protocol: str) -> int:
    """A location id no other test (nor the other protocol's run of this one) uses."""
    return base + 50 * PROTOCOLS.index(protocol)


def codes(errors: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
    """The codes of an `error` message's payload (a list, or one error on graphql-ws)."""
    return [error["extensions"]["code"] for error in
            (errors if isinstance(errors, list) else [errors])]


async def reply(ws: Any, op_id: str) -> dict[str, Any]:
    """The first message about operation `op_id`."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), FAST_SECONDS))
        if message.get("id") == op_id:
            return message


# 1. A token that expires on an open socket.

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_ends_when_its_token_expires_and_its_subscription_with_it(
    protocol: str, server: RunningServer, http: httpx.AsyncClient,
) -> None:
    # given a writer whose token expires in a few seconds, subscribed on its socket
    token = hs256("short-lived-writer", expires_in=3, roles=["writer"])
    expires_at = expiry(token)
    api, created = Api(http), location_id(301, protocol)
    ws = await raw_connect(server.ws_url, protocol, {"token": token})
    try:
        await raw_subscribe(ws, "s", LOCATION_CHANGED, id=created)
        await api.wait_subscribers(1)
        # when it mutates before the expiry, then waits
        await raw_subscribe(ws, "m", CREATE_LOCATION, input=location_input(created))
        messages = await until_closed(ws)
        closed_at = time.time()
    finally:
        await ws.close()

    # then the socket served it until the expiry: the mutation ran, the subscription saw it
    results = {m["id"]: m["payload"]["data"] for m in messages if m["type"] == RESULT[protocol]}
    assert results["m"]["createLocation"]["location"]["id"] == created
    assert results["s"]["locationChanged"]["locationId"] == created
    # and was closed at the expiry, saying why, which ended its subscription
    assert expires_at - CLOCK_SLACK <= closed_at < expires_at + FAST_SECONDS
    assert (ws.close_code, ws.close_reason) == (4403, "The token has expired.")
    if protocol == GRAPHQL_WS:
        assert messages[-1] == {"type": "connection_error", "payload": {
            "message": "The token has expired.", "code": "UNAUTHENTICATED"}}
    await api.wait_subscribers(0)


async def test_a_socket_whose_token_expires_ends_while_others_of_its_subscription_go_on(
    server: RunningServer, http: httpx.AsyncClient,
) -> None:
    # given a socket with a token about to expire and one with an API key, subscribed alike
    # (they share the subscription's results)
    token = hs256("short-lived-reader", expires_in=3, roles=["reader"])
    api, first, second = Api(http), location_id(401, GRAPHQL_TRANSPORT_WS), 402
    expiring = await raw_connect(server.ws_url, GRAPHQL_TRANSPORT_WS, {"token": token})
    lasting = await raw_connect(server.ws_url, GRAPHQL_TRANSPORT_WS,
                                {"Authorization": f"Bearer {READER_KEY}"})
    try:
        for ws in (expiring, lasting):
            await raw_subscribe(ws, "s", LOCATION_CHANGED, id=None)
        await api.wait_subscribers(2)
        # when a location opens before the expiry, and another after it
        await graphql(http, CREATE_LOCATION, WRITER_KEY, input=location_input(first))
        messages = await until_closed(expiring)
        await graphql(http, CREATE_LOCATION, WRITER_KEY, input=location_input(second))
        # then both saw the first; the expired socket was closed, the other saw the second too
        seen = [m["payload"]["data"]["locationChanged"]["locationId"]
                for m in messages if m["type"] == "next"]
        assert seen == [first]
        assert (expiring.close_code, expiring.close_reason) == (4403, "The token has expired.")
        for expected in (first, second):
            message = await reply(lasting, "s")
            assert message["payload"]["data"]["locationChanged"]["locationId"] == expected
        await api.wait_subscribers(1)
    finally:
        await expiring.close()
        await lasting.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_mutation_sent_after_the_token_expired_never_runs(
    protocol: str, server: RunningServer, http: httpx.AsyncClient,
) -> None:
    token = hs256("late-writer", expires_in=2, roles=["writer"])
    refused = location_id(302, protocol)
    ws = await raw_connect(server.ws_url, protocol, {"token": token})
    try:
        await asyncio.sleep(max(0.0, expiry(token) - time.time()))  # until it has expired
        with suppress(ConnectionClosed):  # the server may have closed the socket already
            await raw_subscribe(ws, "m", CREATE_LOCATION, input=location_input(refused))
        messages = await until_closed(ws)
    finally:
        await ws.close()
    assert [m for m in messages if m.get("id") == "m" and m["type"] == RESULT[protocol]] == []
    assert ws.close_code == 4403
    assert await location(http, refused) is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_authenticated_by_its_handshake_header_ends_at_the_expiry_too(
    protocol: str, server: RunningServer,
) -> None:
    token = hs256("header-reader", expires_in=2, roles=["reader"])
    ws = await raw_connect(server.ws_url, protocol,
                           additional_headers={"Authorization": f"Bearer {token}"})
    try:
        await raw_subscribe(ws, "q", "{ __typename }")
        assert (await reply(ws, "q"))["payload"] == {"data": {"__typename": "Query"}}
        await until_closed(ws)
        closed_at = time.time()
    finally:
        await ws.close()
    assert ws.close_code == 4403
    assert expiry(token) - CLOCK_SLACK <= closed_at < expiry(token) + FAST_SECONDS


async def test_a_socket_opened_with_an_api_key_is_not_timed(server: RunningServer) -> None:
    ws = await raw_connect(server.ws_url, GRAPHQL_WS, {"token": READER_KEY})
    try:
        with pytest.raises(TimeoutError):  # nothing ends it: it stays open, silent
            await asyncio.wait_for(ws.recv(), 1.5)
        await raw_subscribe(ws, "q", "{ __typename }")
        assert (await reply(ws, "q"))["type"] == "data"
    finally:
        await ws.close()


# 2. A socket that never sends connection_init.

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_that_never_sends_connection_init_is_closed_with_4408(
    protocol: str, server: RunningServer,
) -> None:
    started = time.monotonic()
    async with connect(server.ws_url, subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        messages = await until_closed(ws)
    assert time.monotonic() - started < INIT_TIMEOUT_SECONDS + FAST_SECONDS
    assert (ws.close_code, ws.close_reason) == (4408, "Connection initialisation timeout")
    assert messages == ([] if protocol == GRAPHQL_TRANSPORT_WS else [
        {"type": "connection_error", "payload": {
            "message": "Connection initialisation timeout", "code": "REQUEST_TIMEOUT"}}
    ])


# 3. Malformed frames.

def malformed_frames(protocol: str) -> dict[str, str | bytes]:
    """Frames of every wrong shape, by what is wrong with them."""
    start = START[protocol]

    def operation(**fields: Any) -> str:
        return json.dumps({"type": start, **fields})

    return {
        "an array": "[]",
        "a string": '"x"',
        "a number": "42",
        "null": "null",
        "invalid JSON": "{",
        "a binary frame": b"\x00\x01",
        "an empty object": "{}",
        "a type that is not a string": '{"type": 5}',
        "an unknown type": '{"type": "hello"}',
        "a connection_init whose payload is a list": '{"type": "connection_init", "payload": []}',
        "an operation without an id": operation(payload={"query": "{ __typename }"}),
        "an operation whose id is a number": operation(id=1, payload={"query": "{ __typename }"}),
        "an operation whose payload is a string": operation(id="1", payload="x"),
        "an operation without a query": operation(id="1", payload={}),
        "an operation whose variables are a list": operation(
            id="1", payload={"query": "{ __typename }", "variables": []}),
    }


@pytest.mark.parametrize("after_init", [False, True], ids=["first frame", "after init"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_malformed_frame_ends_the_socket_with_4400_saying_why(
    protocol: str, after_init: bool, server: RunningServer,
) -> None:
    for what, frame in malformed_frames(protocol).items():
        if after_init:
            ws = await raw_connect(server.ws_url, protocol, {"token": READER_KEY})
        else:
            ws = await connect(server.ws_url, subprotocols=[protocol])  # type: ignore[list-item]
        try:
            await ws.send(frame)
            messages = await until_closed(ws)
        finally:
            await ws.close()
        assert ws.close_code == 4400, what
        assert ws.close_reason, what
        if protocol == GRAPHQL_TRANSPORT_WS:
            assert messages == [], what
        else:
            assert messages == [{"type": "connection_error", "payload": {
                "message": ws.close_reason, "code": "BAD_REQUEST"}}], what
    ws = await raw_connect(server.ws_url, protocol, {"token": READER_KEY})  # it serves on
    try:
        await raw_subscribe(ws, "q", "{ __typename }")
        assert (await reply(ws, "q"))["payload"] == {"data": {"__typename": "Query"}}
    finally:
        await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_document_that_does_not_parse_is_refused_even_with_a_long_message(
    protocol: str, server: RunningServer,
) -> None:
    long_syntax_error = "{ __typename } " + "b" * 300  # the error message quotes the name
    ws = await raw_connect(server.ws_url, protocol, {"token": READER_KEY})
    try:
        await raw_subscribe(ws, "p", long_syntax_error)
        if protocol == GRAPHQL_TRANSPORT_WS:  # the protocol closes; the reason must fit a frame
            await until_closed(ws)
            assert ws.close_code == 4400
            assert ws.close_reason.startswith("Syntax Error: Unexpected Name 'bbb")
            assert len(ws.close_reason.encode()) <= 123
        else:
            refused = await reply(ws, "p")
            assert refused["type"] == "error"
            assert codes(refused["payload"]) == ["GRAPHQL_PARSE_FAILED"]
    finally:
        await ws.close()


# 4. An operation of a kind its transport does not carry.

SUBSCRIPTION = "subscription { locationChanged { locationId } }"


async def test_a_subscription_sent_by_http_gets_a_typed_error(http: httpx.AsyncClient) -> None:
    for token in (None, READER_KEY):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for response in (
            await http.post("/graphql", json={"query": SUBSCRIPTION}, headers=headers),
            await http.get("/graphql", params={"query": SUBSCRIPTION},
                           headers={**headers, "Accept": "application/json"}),
        ):
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["data"] is None
            assert codes(body["errors"]) == ["GRAPHQL_VALIDATION_FAILED"]
            assert "websocket" in body["errors"][0]["message"]


async def test_graphql_ws_runs_queries_and_mutations_as_graphql_transport_ws_does(
    server: RunningServer, http: httpx.AsyncClient,
) -> None:
    writer = await raw_connect(server.ws_url, GRAPHQL_WS, {"token": WRITER_KEY})
    try:
        await raw_subscribe(writer, "m", CREATE_LOCATION, input=location_input(303))
        created = await reply(writer, "m")
        assert created["type"] == "data", created
        assert created["payload"]["data"]["createLocation"]["location"]["id"] == 303
        assert await reply(writer, "m") == {"type": "complete", "id": "m"}
    finally:
        await writer.close()
    assert await location(http, 303) == {"id": 303}

    reader = await raw_connect(server.ws_url, GRAPHQL_WS, {"token": READER_KEY})
    try:
        await raw_subscribe(reader, "m", CREATE_LOCATION, input=location_input(304))
        refused = await reply(reader, "m")
        assert (refused["type"], codes(refused["payload"])) == ("error", ["FORBIDDEN"])
        await raw_subscribe(reader, "q", "{ __typename }")  # the socket serves on
        assert (await reply(reader, "q"))["payload"] == {"data": {"__typename": "Query"}}
    finally:
        await reader.close()
    assert await location(http, 304) is None


# 5. A document that names what it does not have.

MISSING_FRAGMENT = "{ locations { ...Missing } }"


async def test_an_unknown_fragment_over_http_is_a_validation_error(
    http: httpx.AsyncClient,
) -> None:
    for token in (None, READER_KEY):
        body = await graphql(http, MISSING_FRAGMENT, token)
        assert body["data"] is None
        assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
            ("Unknown fragment 'Missing'.", "GRAPHQL_VALIDATION_FAILED")
        ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unknown_fragment_or_operation_name_over_a_socket_is_refused(
    protocol: str, server: RunningServer,
) -> None:
    ws = await raw_connect(server.ws_url, protocol, {"token": READER_KEY})
    try:
        for op_id, query in (("f", MISSING_FRAGMENT),
                             ("s", "subscription { locationChanged { ...Missing } }")):
            await raw_subscribe(ws, op_id, query)
            refused = await reply(ws, op_id)
            assert refused["type"] == "error", refused
            assert codes(refused["payload"]) == ["GRAPHQL_VALIDATION_FAILED"]
        await ws.send(json.dumps({"id": "n", "type": START[protocol], "payload": {
            "query": "query Here { __typename }", "operationName": "Elsewhere"}}))
        if protocol == GRAPHQL_TRANSPORT_WS:  # the protocol closes on it
            await until_closed(ws)
            assert ws.close_code == 4400
            assert ws.close_reason == 'Unknown operation named "Elsewhere".'
        else:
            refused = await reply(ws, "n")
            assert refused["type"] == "error", refused
            assert codes(refused["payload"]) == ["GRAPHQL_VALIDATION_FAILED"]
    finally:
        await ws.close()
