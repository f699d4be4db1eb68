"""A token's expiry after it was accepted: the principal keeps it, every operation checks it, and
a websocket's guard ends the socket at it and refuses an operation sent after it. Frames of the
wrong shape are told apart from good ones for both websocket protocols.

Served sockets are in tests/e2e/test_websocket_hardening.py; here each piece on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from app.auth import Authenticator, Principal
from app.schema import build_schema
from app.settings import Settings
from app.web.websockets import LEGACY_FRAMES, TRANSPORT_FRAMES, SocketGuard, frame_problem

SECRET = "a-shared-hs256-secret-of-at-least-32-bytes!"
AUTH = Authenticator(Settings(auth_mode="token", jwt_secret=SECRET, api_keys="key-1:writer:k"))
SCHEMA = build_schema(Settings())
READER = frozenset({"reader"})


def test_a_jwt_principal_keeps_its_expiry_and_an_api_key_has_none() -> None:
    exp = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=5)
    token = jwt.encode({"sub": "ana", "exp": exp, "roles": ["reader"]}, SECRET, "HS256")
    principal = AUTH.from_token(token)
    assert principal.expires_at == exp.timestamp()
    assert not principal.expired(exp.timestamp() - 1)
    assert principal.expired(exp.timestamp())  # from `exp` on, as PyJWT decides
    assert AUTH.from_token("key-1").expires_at is None
    assert not AUTH.from_token("key-1").expired(time.time() + 10**9)


async def run(query: str, principal: Principal) -> Any:
    return await SCHEMA.execute(query, context_value=SimpleNamespace(
        principal=principal, auth_error=None
    ))


async def test_an_operation_is_refused_once_the_token_has_expired() -> None:
    valid = await run("{ __typename }", Principal("ana", READER, time.time() + 60))
    assert valid.data == {"__typename": "Query"}
    refused = await run("{ __typename }", Principal("ana", READER, time.time() - 1))
    assert refused.data is None
    assert [(e.message, (e.extensions or {}).get("code")) for e in refused.errors or []] == [
        ("The token has expired.", "UNAUTHENTICATED")
    ]


class Ends:
    """What a guard asked its socket to do: (close code, reason, error code) per end."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str]] = []
        self.at: list[float] = []
        self.happened = asyncio.Event()

    async def __call__(self, close_code: int, reason: str, code: str) -> None:
        self.calls.append((close_code, reason, code))
        self.at.append(time.time())
        self.happened.set()


def guard(principal: Principal | None, protocol: str = "graphql-transport-ws") -> tuple[
    SocketGuard, Ends
]:
    frames = TRANSPORT_FRAMES if protocol == "graphql-transport-ws" else LEGACY_FRAMES
    ends = Ends()
    return SocketGuard(SimpleNamespace(principal=principal), frames, ends), ends  # type: ignore[arg-type]


OPERATION = {"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }"}}


async def test_an_operation_arriving_after_the_expiry_ends_the_socket_and_never_starts() -> None:
    fresh, ends = guard(Principal("ana", READER, time.time() + 60))
    assert await fresh.admit(OPERATION)
    assert ends.calls == []
    stale, ends = guard(Principal("ana", READER, time.time() - 0.001))
    assert not await stale.admit(OPERATION)
    assert ends.calls == [(4403, "The token has expired.", "UNAUTHENTICATED")]
    assert await stale.admit({"type": "ping"})  # only operations are refused: nothing starts


async def test_the_socket_is_ended_at_the_expiry_of_its_token() -> None:
    expires_at = time.time() + 0.3
    timed, ends = guard(Principal("ana", READER, expires_at))
    timed.authenticated()
    try:
        await asyncio.wait_for(ends.happened.wait(), 10)
    finally:
        timed.stop()
    assert ends.calls == [(4403, "The token has expired.", "UNAUTHENTICATED")]
    assert ends.at[0] >= expires_at - 0.05  # not before (the sleep runs on the monotonic clock)


async def test_a_socket_without_expiry_or_stopped_is_never_ended() -> None:
    for principal in (Principal("key", READER), None):
        untimed, ends = guard(principal)
        untimed.authenticated()
        await asyncio.sleep(0)
        assert ends.calls == []
    stopped, ends = guard(Principal("ana", READER, time.time() + 0.05))
    stopped.authenticated()
    stopped.await_init(0.05)
    stopped.stop()
    await asyncio.sleep(0.2)
    assert ends.calls == []


@pytest.mark.parametrize(("frames", "start", "stop"), [
    (TRANSPORT_FRAMES, "subscribe", "complete"), (LEGACY_FRAMES, "start", "stop"),
])
def test_frames_of_the_wrong_shape_are_told_apart(frames: Any, start: str, stop: str) -> None:
    good = [
        {"type": "connection_init"}, {"type": "connection_init", "payload": {"token": "t"}},
        {"type": start, "id": "1", "payload": {"query": "{ a }", "variables": None,
                                               "operationName": "A", "extensions": {}}},
        {"type": stop, "id": "1"},
    ]
    for message in good:
        assert frame_problem(message, frames) is None, message
    bad = [
        [], "x", 42, None, {}, {"type": 5}, {"type": "nope"}, {"type": "data"},
        {"type": "connection_init", "payload": "x"},
        {"type": stop}, {"type": stop, "id": 1}, {"type": stop, "id": ""},
        {"type": start, "id": "1"}, {"type": start, "id": "1", "payload": []},
        {"type": start, "id": "1", "payload": {"query": ""}},
        {"type": start, "id": "1", "payload": {"query": 5}},
        {"type": start, "id": "1", "payload": {"query": "{ a }", "variables": [1]}},
        {"type": start, "id": "1", "payload": {"query": "{ a }", "operationName": 1}},
        {"type": start, "id": "1", "payload": {"query": "{ a }", "extensions": "x"}},
    ]
    for message in bad:
        problem = frame_problem(message, frames)
        assert problem, message
        assert len(problem.encode()) <= 123  # it is sent as a close reason
