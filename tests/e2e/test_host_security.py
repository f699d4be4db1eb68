"""Host-level defences of the real service (`python -m app serve` in a subprocess).

The embedded Valkey refuses clients without its password; ALLOWED_HOSTS refuses requests and
websockets that name another host (DNS rebinding); request heads and websocket messages are
bounded in size and heads in time; with introspection off no error suggests schema names; and a
setting that would make up an actor name per process stops `serve` before it starts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness.server import RunningServer, app_env, running_server
from tests.harness.ws_support import GRAPHQL_TRANSPORT_WS, PROTOCOLS

HEADER_TIMEOUT_SECONDS = 1.0
FAST_SECONDS = 5.0  # a refusal comes well within this
WAIT_SECONDS = 15.0
MAX_HEADER_BYTES = 16 * 1024  # the defaults of MAX_HEADER_BYTES and MAX_WS_MESSAGE_BYTES
MAX_WS_MESSAGE_BYTES = 1024 * 1024
REBOUND_HOST = "rebound.attacker.example"  # a name an attacker pointed at 127.0.0.1

MISSPELT = [
    # (query, variables): each a near miss of a schema name
    ("{ locatons { id } }", None),
    ("{ location(idd: 1) { id } }", None),
    ("{ locations { ...F } } fragment F on Locaton { id }", None),
    ("mutation($input: CreateLocationInput!) { createLocation(input: $input) { __typename } }",
     {"input": {"idd": 1, "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
                "postalCode": "62701"}}),
]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The defaults, except a short header timeout and introspection off."""
    env = {"HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS), "INTROSPECTION": "false"}
    with running_server(tmp_path_factory.mktemp("guarded"), extra_env=env) as server:
        yield server


@pytest.fixture(scope="module")
def any_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("any-host"),
                        extra_env={"ALLOWED_HOSTS": "*"}) as server:
        yield server


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Started and found ready through /healthz and /readyz, which name 127.0.0.1: not listed."""
    env = {"ALLOWED_HOSTS": "api.example.com,*.example.org"}
    with running_server(tmp_path_factory.mktemp("listed"), extra_env=env) as server:
        yield server


@pytest.fixture
async def http(guarded: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=guarded.base_url, timeout=30.0) as client:
        yield client


def assert_no_error_logged(server: RunningServer) -> None:
    log = server.log_path.read_text(errors="replace")
    assert '"level": "ERROR"' not in log, log[-3000:]
    assert "Exception in ASGI application" not in log, log[-3000:]


async def typename(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["data"] is None, body
    code: str = body["errors"][0]["extensions"]["code"]
    return code


# The embedded Valkey.


def test_the_embedded_valkey_refuses_a_client_without_its_password(
    guarded: RunningServer,
) -> None:
    info_file = guarded.embedded_valkey_info
    assert stat.S_IMODE((guarded.work_dir / "var").stat().st_mode) == 0o700  # made by serve
    assert stat.S_IMODE(info_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(info_file.stat().st_mode) == 0o600
    info = json.loads(info_file.read_text())

    with socket.create_connection(("127.0.0.1", info["port"]), timeout=5) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$7\r\nplanted\r\n$1\r\nx\r\n")  # SET planted x
        assert sock.recv(100).startswith(b"-NOAUTH")

    # another process of the checkout finds it through server.json, with the password
    status = subprocess.run(
        [sys.executable, "-m", "app", "status"], cwd=guarded.work_dir,
        env=app_env(guarded.work_dir), capture_output=True, text=True, timeout=60, check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "projected position:" in status.stdout

    logs = [guarded.log_path, info_file.parent / "valkey.log"]
    for log in logs:
        assert info["password"] not in log.read_text(errors="replace"), log
    assert info["password"] not in status.stdout + status.stderr
    assert_no_error_logged(guarded)


# ALLOWED_HOSTS.


async def test_requests_naming_the_bound_host_or_a_loopback_name_are_answered(
    guarded: RunningServer, http: httpx.AsyncClient,
) -> None:
    for host in (f"127.0.0.1:{guarded.port}", f"localhost:{guarded.port}", "LOCALHOST",
                 f"[::1]:{guarded.port}"):
        response = await typename(http, host=host)
        assert response.json() == {"data": {"__typename": "Query"}}, host


async def test_a_request_naming_another_host_gets_400_and_runs_nothing(
    guarded: RunningServer, http: httpx.AsyncClient,
) -> None:
    create = {"query": 'mutation { createLocation(input: {id: 901, streetAddress: "1 Main St", '
                       'city: "Springfield", state: "IL", postalCode: "62701"}) { __typename } }'}
    for host in (f"{REBOUND_HOST}:{guarded.port}", REBOUND_HOST, f"127.0.0.1.{REBOUND_HOST}"):
        refused = await http.post("/graphql", json=create, headers={"host": host})
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "HOST_NOT_ALLOWED"
        assert refused.headers["content-type"] == "application/json"
    found = await http.post("/graphql", json={"query": "{ location(id: 901) { id } }"})
    assert found.json() == {"data": {"location": None}}
    assert (await http.get("/", headers={"host": REBOUND_HOST})).status_code == 400
    metrics = (await http.get("/metrics")).text
    assert 'cqrs_rejected_requests_total{reason="host_not_allowed"}' in metrics
    assert_no_error_logged(guarded)


async def test_probes_answer_whatever_host_they_name(http: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await http.get(path, headers={"host": "10.1.2.3:8000"})  # a pod's IP
        assert response.status_code == 200, path


async def open_as(
    server: RunningServer, host: str, protocol: str, **options: Any
) -> ClientConnection:
    """A websocket to `server` whose handshake names `host`, as after DNS rebinding."""
    return await connect(
        f"ws://{host}:{server.port}/graphql", host="127.0.0.1", port=server.port,
        subprotocols=[protocol], proxy=None, open_timeout=WAIT_SECONDS, **options,  # type: ignore[list-item]
    )


async def init(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECONDS))["type"] == "connection_ack"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_naming_another_host_is_refused_at_its_handshake(
    guarded: RunningServer, protocol: str,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await open_as(guarded, REBOUND_HOST, protocol)
    assert refused.value.response.status_code == 403

    ws = await open_as(guarded, "localhost", protocol)  # a listed name opens as ever
    try:
        await init(ws)
    finally:
        await ws.close()
    assert_no_error_logged(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_star_allows_every_host(any_host: RunningServer, protocol: str) -> None:
    async with httpx.AsyncClient(base_url=any_host.base_url, timeout=30.0) as http:
        response = await typename(http, host=REBOUND_HOST)
        assert response.json() == {"data": {"__typename": "Query"}}
    ws = await open_as(any_host, REBOUND_HOST, protocol)
    try:
        await init(ws)
    finally:
        await ws.close()


async def test_a_list_that_is_set_is_the_whole_list(listed: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=listed.base_url, timeout=30.0) as http:
        for host in ("api.example.com", "API.example.com:443", "eu.example.org"):
            response = await typename(http, host=host)
            assert response.json() == {"data": {"__typename": "Query"}}, host
        for host in (f"127.0.0.1:{listed.port}", "localhost", "example.org", "example.com"):
            response = await typename(http, host=host)
            assert response.status_code == 400, host
        assert (await http.get("/readyz")).status_code == 200  # probes are not checked


# Suggestions.


async def misspelt_messages(http: httpx.AsyncClient) -> list[str]:
    messages = []
    for query, variables in MISSPELT:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        body = response.json()
        assert body.get("data") is None, body
        messages += [error["message"] for error in body["errors"]]
    return messages


async def test_without_introspection_no_error_suggests_a_schema_name(
    guarded: RunningServer, http: httpx.AsyncClient,
) -> None:
    messages = await misspelt_messages(http)
    assert "Cannot query field 'locatons' on type 'Query'." in messages
    assert "Unknown type 'Locaton'." in messages
    for message in messages:
        assert "Did you mean" not in message, message
        for name in ("'locations'", "'Location'", "'id'"):
            assert name not in message, message
    assert_no_error_logged(guarded)


async def test_with_introspection_errors_still_suggest_names(any_host: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=any_host.base_url, timeout=30.0) as http:
        messages = await misspelt_messages(http)
    assert "Cannot query field 'locatons' on type 'Query'. Did you mean 'locations' or " \
           "'location'?" in messages
    assert "Unknown type 'Locaton'. Did you mean 'Location'?" in messages
    assert sum("Did you mean 'id'?" in message for message in messages) == 2


# Request heads and websocket messages.


async def exchange(
    server: RunningServer, chunks: list[bytes], pause: float = 0.0
) -> tuple[bytes, float]:
    """Write `chunks` on a fresh connection (`pause` s apart) and read until the server closes
    it: what it answered, and how long after connecting it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()

    async def write() -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)

    writing = asyncio.create_task(write())
    try:
        answer = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        closed_after = time.monotonic() - started
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)  # the server may reset the socket
        writer.close()
    return answer, closed_after


def answered(answer: bytes, status: int, code: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["errors"][0]["extensions"]["code"] == code


def request_head(*headers: str) -> bytes:
    lines = ["GET /healthz HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_head_over_max_header_bytes_is_refused_with_431(
    guarded: RunningServer, http: httpx.AsyncClient,
) -> None:
    under = request_head("X-Filler: " + "a" * (MAX_HEADER_BYTES - 100), "Connection: close")
    answer, _ = await exchange(guarded, [under])
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]

    over = request_head("X-Filler: " + "a" * MAX_HEADER_BYTES)
    answer, _ = await exchange(guarded, [over])  # in one write
    answered(answer, 431, "REQUEST_TOO_LARGE")
    answer, _ = await exchange(guarded, [over[:10_000], over[10_000:]], pause=0.2)  # in two
    answered(answer, 431, "REQUEST_TOO_LARGE")

    # 8 MiB of one header, 4 KiB at a time: refused long before it is all sent
    endless = [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "]
    endless += [b"a" * 4096] * 2048
    answer, _ = await exchange(guarded, endless)
    answered(answer, 431, "REQUEST_TOO_LARGE")

    upgrade = request_head(
        "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "X-Filler: " + "a" * MAX_HEADER_BYTES,
    )
    answer, _ = await exchange(guarded, [upgrade])
    answered(answer, 431, "REQUEST_TOO_LARGE")

    assert (await http.get("/healthz")).status_code == 200
    metrics = (await http.get("/metrics")).text
    assert 'cqrs_rejected_requests_total{reason="headers_too_large"} 4.0' in metrics
    assert_no_error_logged(guarded)


async def test_a_head_not_complete_within_header_timeout_seconds_is_closed(
    guarded: RunningServer, http: httpx.AsyncClient,
) -> None:
    bound = HEADER_TIMEOUT_SECONDS + FAST_SECONDS
    # half a head, then nothing: a 408, and closed
    answer, closed_after = await exchange(guarded, [b"GET /healthz HTTP/1.1\r\nHost: 127"])
    answered(answer, 408, "REQUEST_TIMEOUT")
    assert HEADER_TIMEOUT_SECONDS * 0.9 <= closed_after < bound

    # a byte every 0.2 s, never finishing (slowloris): the deadline does not move
    trickle = [bytes([byte]) for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200]
    answer, closed_after = await exchange(guarded, trickle, pause=0.2)
    answered(answer, 408, "REQUEST_TIMEOUT")
    assert closed_after < bound

    # a connection that never sends anything is closed too, without an answer
    answer, closed_after = await exchange(guarded, [])
    assert answer == b""
    assert closed_after < bound

    # a keep-alive client is unaffected: its next head, in time, is answered
    assert (await http.get("/healthz")).status_code == 200
    await asyncio.sleep(HEADER_TIMEOUT_SECONDS / 2)
    assert (await http.get("/healthz")).status_code == 200
    assert_no_error_logged(guarded)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_websocket_message_over_max_ws_message_bytes_closes_with_1009(
    guarded: RunningServer, http: httpx.AsyncClient, protocol: str,
) -> None:
    ws = await open_as(guarded, "127.0.0.1", protocol, max_size=None)
    try:
        await init(ws)
        # just under the limit, a message the protocol accepts and answers or ignores: a ping
        # (graphql-transport-ws), a stop for an operation that is not running (graphql-ws)
        filler = "a" * (MAX_WS_MESSAGE_BYTES - 50)
        under = ({"type": "ping", "payload": {"pad": filler}} if protocol == GRAPHQL_TRANSPORT_WS
                 else {"type": "stop", "id": filler})
        await ws.send(json.dumps(under))
        await ws.send("a" * (MAX_WS_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed):
            while True:  # a pong (graphql-transport-ws) or keep-alives (graphql-ws) come first
                await asyncio.wait_for(ws.recv(), WAIT_SECONDS)
    finally:
        await ws.close()
    assert ws.close_code == 1009
    assert (await typename(http)).json() == {"data": {"__typename": "Query"}}
    assert_no_error_logged(guarded)


# Actor names.


def test_serve_refuses_an_unnamed_api_key_without_actor_name_secret(tmp_path: Path) -> None:
    settings = {"AUTH_MODE": "token", "API_KEYS": "named-key-0123:reader:ops,other-key-0123:writer"}
    started = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "0"], cwd=tmp_path,
        env=app_env(tmp_path, extra=settings), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert started.returncode == 2
    assert started.stderr.strip().splitlines() == [
        "python -m app serve: API_KEYS: entry 2 has no name; name it (`key:role:name`) or set "
        "ACTOR_NAME_SECRET, under which unnamed keys get a name that does not reveal them"
    ]
    assert "other-key-0123" not in started.stderr + started.stdout
    assert not (tmp_path / "var" / "valkey" / "server.json").exists()
