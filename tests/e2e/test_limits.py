"""Abuse limits against the real service (`python -m app serve` in a subprocess).

Every abusive request is refused quickly with a clear error, and afterwards the server is still
healthy: /healthz answers 200 and an ordinary query (and a mutation) still works.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.harness.server import RunningServer, running_server

ALLOWED_ORIGIN = "https://app.example.com"
REFUSED_ORIGIN = "https://evil.example.com"
LIMITED_ENV = {
    "READ_MODEL_WAIT_SECONDS": "20",  # a query waiting on minPosition outlives the request timeout
    "REQUEST_TIMEOUT_SECONDS": "2",
    "WS_INIT_TIMEOUT_SECONDS": "1",
    "INTROSPECTION": "false",
    "CORS_ORIGINS": ALLOWED_ORIGIN,
    "MAX_ALIASES": "30",
}
MAX_SUBSCRIPTIONS = 50  # the default of MAX_SUBSCRIPTIONS_PER_CONNECTION
FAST_SECONDS = 5.0  # a refusal must come well within this
WAIT_SECONDS = 15.0


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("limits"), extra_env=LIMITED_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("limits-defaults")) as server:
        yield server


@pytest.fixture
async def http(limited_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited_server.base_url, timeout=30.0) as client:
        yield client


async def post(http: httpx.AsyncClient, query: str, **variables: Any) -> httpx.Response:
    return await http.post("/graphql", json={"query": query, "variables": variables})


def error_messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None, body
    return [error["message"] for error in body["errors"]]


async def assert_healthy(http: httpx.AsyncClient, location_id: int) -> None:
    """The server still answers health checks, queries and mutations."""
    assert (await http.get("/healthz")).status_code == 200
    created = await post(
        http,
        "mutation($input: CreateLocationInput!) { createLocation(input: $input) {"
        " __typename ... on LocationPayload { position location { id } } } }",
        input={"id": location_id, "streetAddress": "1 Main St", "city": "Springfield",
               "state": "IL", "postalCode": "62701"},
    )
    assert created.status_code == 200, created.text
    payload = created.json()["data"]["createLocation"]
    assert payload["__typename"] == "LocationPayload", payload
    found = await post(http, "query($id: Int!) { location(id: $id) { id city } }", id=location_id)
    assert found.json() == {"data": {"location": {"id": location_id, "city": "Springfield"}}}


def nested_query(depth: int) -> str:
    """`{ locations { employees { location { employees ... { id } } } } }`, `depth` levels deep."""
    chain = ["locations"] + [("employees" if i % 2 == 1 else "location") for i in range(1, depth)]
    return "{ " + " { ".join(chain) + " { id }" + " }" * depth


async def test_a_depth_50_query_is_refused_for_its_depth_and_a_depth_12_one_for_its_cost(
    http: httpx.AsyncClient,
) -> None:
    """Depth 12 passes the depth rule; its nested lists multiply, which the cost limit sees
    (tests/e2e/test_query_cost.py); a cheap depth-3 one runs."""
    started = time.monotonic()
    messages = error_messages(await post(http, nested_query(50)))
    assert time.monotonic() - started < FAST_SECONDS
    assert messages == ["'anonymous' exceeds maximum operation depth of 12"]
    deep = (await post(http, nested_query(12))).json()
    [error] = deep["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["extensions"]["cost"] > error["extensions"]["maxCost"]
    allowed = await post(http, nested_query(3))
    assert "errors" not in allowed.json(), allowed.text
    await assert_healthy(http, 101)


async def test_ten_thousand_aliases_are_refused_by_the_token_limit(
    http: httpx.AsyncClient,
) -> None:
    query = "{ " + " ".join(f"a{i}: __typename" for i in range(10_000)) + " }"
    started = time.monotonic()
    messages = error_messages(await post(http, query))
    assert time.monotonic() - started < FAST_SECONDS
    assert messages == ["Syntax Error: Document contains more than 2000 tokens. Parsing aborted."]
    await assert_healthy(http, 102)


async def test_more_aliases_than_allowed_are_refused_within_the_token_limit(
    http: httpx.AsyncClient,
) -> None:
    query = "{ " + " ".join(f"a{i}: __typename" for i in range(31)) + " }"
    assert error_messages(await post(http, query)) == ["31 aliases found. Allowed: 30"]
    thirty = "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }"
    assert (await post(http, thirty)).json()["data"]["a29"] == "Query"
    await assert_healthy(http, 103)


async def raw_post_head(
    server: RunningServer, headers: dict[str, str], chunks: Iterator[bytes]
) -> tuple[bytes, int]:
    """POST /graphql over a raw socket, writing `chunks` while reading the response head.

    Returns the status line and headers, and how many body bytes had been written when they
    arrived: a server that refuses early answers long before the body is all sent.
    """
    host = urlsplit(server.base_url)
    reader, writer = await asyncio.open_connection(host.hostname, host.port)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST /graphql HTTP/1.1\r\nHost: {host.netloc}\r\n{head}\r\n".encode())
    sent = 0

    async def write_body() -> None:
        nonlocal sent
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0)  # drain() need not yield: let the reader see the answer

    writing = asyncio.create_task(write_body())
    try:
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_SECONDS)
        sent_when_answered = sent
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)  # the server may reset the socket
        writer.close()
    return response, sent_when_answered


TWENTY_MB = 20 * 1024 * 1024
CHUNK = 64 * 1024


async def test_a_20_mb_body_declared_by_content_length_is_refused_with_413_before_it_is_sent(
    limited_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    head, sent = await raw_post_head(
        limited_server,
        {"Content-Type": "application/json", "Content-Length": str(TWENTY_MB)},
        iter([b" " * CHUNK] * (TWENTY_MB // CHUNK)),
    )
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert sent < TWENTY_MB // 2
    await assert_healthy(http, 104)


async def test_a_20_mb_chunked_body_is_refused_with_413_once_past_the_limit(
    limited_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    def chunked() -> Iterator[bytes]:
        for _ in range(TWENTY_MB // CHUNK):
            yield f"{CHUNK:x}\r\n".encode() + b" " * CHUNK + b"\r\n"
        yield b"0\r\n\r\n"

    head, sent = await raw_post_head(
        limited_server,
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunked(),
    )
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert sent < TWENTY_MB // 2
    await assert_healthy(http, 105)


async def test_a_body_over_the_limit_gets_a_graphql_error_body(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/graphql", content=b" " * (1024 * 1024 + 1),
        headers={"content-type": "application/json", "x-request-id": "too-large-1"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
    assert response.headers["x-request-id"] == "too-large-1"  # refusals carry it too
    await assert_healthy(http, 106)


async def test_a_request_slower_than_the_timeout_gets_a_503_graphql_error(
    http: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await post(http, "{ location(id: 1, minPosition: 999999999) { id } }")
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "REQUEST_TIMEOUT"
    assert "2 s" in error["message"]
    assert 1.5 < elapsed < 2 + FAST_SECONDS
    await assert_healthy(http, 107)


async def test_first_above_500_is_refused(http: httpx.AsyncClient) -> None:
    response = await post(http, "{ employees(first: 501) { totalCount } }")
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    await assert_healthy(http, 108)


async def test_a_thousand_subscriptions_on_one_socket_stop_at_the_limit(
    limited_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    query = "subscription { locationChanged { position locationId } }"
    async with connect(limited_server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)) == {
            "type": "connection_ack"
        }
        for n in range(1000):
            await ws.send(json.dumps(
                {"id": str(n), "type": "subscribe", "payload": {"query": query}}
            ))
        await ws.send(json.dumps({"type": "ping"}))
        refused: list[str] = []
        while (message := json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS)))[
            "type"
        ] != "pong":
            assert message["type"] == "error", message
            assert message["payload"] == [{"message": "Subscription limit reached"}]
            refused.append(message["id"])
        assert refused == [str(n) for n in range(MAX_SUBSCRIPTIONS, 1000)]

        # The socket is still open and its accepted subscriptions still deliver.
        await assert_healthy(http, 109)
        delivered = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))
        assert delivered["type"] == "next", delivered
        assert int(delivered["id"]) < MAX_SUBSCRIPTIONS
        assert delivered["payload"]["data"]["locationChanged"]["locationId"] == 109
    await assert_healthy(http, 110)


async def test_a_websocket_that_never_sends_connection_init_is_closed_with_4408(
    limited_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    async with connect(limited_server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
    assert ws.close_code == 4408
    assert time.monotonic() - started < 1 + FAST_SECONDS
    await assert_healthy(http, 111)


async def test_introspection_is_refused_when_switched_off(http: httpx.AsyncClient) -> None:
    messages = error_messages(await post(http, "{ __schema { queryType { name } } }"))
    assert messages[0].startswith("GraphQL introspection has been disabled")
    assert (await post(http, "{ __typename }")).json() == {"data": {"__typename": "Query"}}
    await assert_healthy(http, 112)


async def test_cors_answers_an_allowed_origin_and_refuses_another(
    http: httpx.AsyncClient,
) -> None:
    preflight = {"access-control-request-method": "POST",
                 "access-control-request-headers": "content-type, authorization"}
    allowed = await http.options("/graphql", headers={"origin": ALLOWED_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = await http.options("/graphql", headers={"origin": REFUSED_ORIGIN, **preflight})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

    query = {"query": "{ __typename }"}
    simple = await http.post("/graphql", json=query, headers={"origin": ALLOWED_ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    other = await http.post("/graphql", json=query, headers={"origin": REFUSED_ORIGIN})
    assert "access-control-allow-origin" not in other.headers
    too_large = await http.post(
        "/graphql", content=b" " * (1024 * 1024 + 1),
        headers={"origin": ALLOWED_ORIGIN, "content-type": "application/json"},
    )
    assert too_large.status_code == 413  # and a browser may read why
    assert too_large.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    await assert_healthy(http, 113)


async def test_a_browser_websocket_from_a_refused_origin_is_rejected(
    limited_server: RunningServer, http: httpx.AsyncClient,
) -> None:
    async with connect(
        limited_server.ws_url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        origin=ALLOWED_ORIGIN,  # type: ignore[arg-type]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["type"] == (
            "connection_ack"
        )
    with pytest.raises(Exception, match="403"):
        async with connect(
            limited_server.ws_url, subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            origin=REFUSED_ORIGIN,  # type: ignore[arg-type]
        ):
            pass
    await assert_healthy(http, 114)


async def test_metrics_show_projection_lag_and_rejections(http: httpx.AsyncClient) -> None:
    await post(http, nested_query(50))
    await assert_healthy(http, 115)
    text = (await http.get("/metrics")).text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["cqrs_projection_lag_events"]) >= 0
    assert float(samples["cqrs_projection_lag_seconds"]) >= 0
    assert "cqrs_rejected_requests_total" in text


async def test_defaults_allow_introspection_and_send_no_cors_headers(
    default_server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=default_server.base_url, timeout=30.0) as http:
        response = await post(http, "{ __schema { queryType { name } } }")
        assert response.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        cross = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": ALLOWED_ORIGIN}
        )
        assert "access-control-allow-origin" not in cross.headers
        assert error_messages(await post(http, nested_query(13))) == [
            "'anonymous' exceeds maximum operation depth of 12"
        ]
        aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(101)) + " }"
        assert error_messages(await post(http, aliases)) == ["101 aliases found. Allowed: 100"]
        await assert_healthy(http, 1)
