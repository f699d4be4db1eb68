"""The websocket side of /graphql: strawberry's handlers of both protocols, with what both need.

- `SocketGuard` (one per socket, owned by its handler) holds the rules both protocols share:
  a client frame is checked before strawberry acts on it; a socket authenticated with a token
  that expires is ended at the expiry, and an operation arriving after it never starts; a
  socket that never sends connection_init is closed (strawberry does this for
  graphql-transport-ws only, so the guard does it for graphql-ws).
- `TransportWSHandler` (graphql-transport-ws) and `LegacyWSHandler` (graphql-ws) apply it, each
  saying why a socket ends the way its protocol can: graphql-transport-ws in the close frame,
  graphql-ws in a `connection_error` first.
- `SocketAdapter`: a socket closed under a task that is sending on it means the client is gone,
  an ordinary event, and closing it again does nothing.

Close codes (docs/security.md#websockets): 4400 a malformed frame, 4403 a refused or expired
token, 4408 no connection_init in time (WS_INIT_TIMEOUT_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, NamedTuple

import orjson
from starlette.websockets import WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as SentAfterClose
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
)
from strawberry.subscriptions.protocols.graphql_ws import types as legacy
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.execution import ExecutionResult, PreExecutionError

from app.auth import EXPIRED
from app.schema.context import Context
from app.schema.sharing import DELIVERY, Delivery

# The name these lines carried before app/main.py became app/web/: log filters match on it.
log = logging.getLogger("app.main")

MALFORMED, FORBIDDEN, INIT_TIMEOUT = 4400, 4403, 4408
CLOSE_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code


class Frames(NamedTuple):
    """The messages a protocol's clients send: their types, and the two that carry an id."""

    types: frozenset[str]
    start: str  # starts an operation; its payload is a GraphQL request
    stop: str


TRANSPORT_FRAMES = Frames(
    frozenset({"connection_init", "ping", "pong", "subscribe", "complete"}), "subscribe", "complete"
)
LEGACY_FRAMES = Frames(
    frozenset({"connection_init", "connection_terminate", "start", "stop"}), "start", "stop"
)
REQUEST_FIELDS: Mapping[str, type] = {"variables": dict, "operationName": str, "extensions": dict}


def frame_problem(message: object, frames: Frames) -> str | None:
    """Why a client's frame is not one its protocol can act on; None when it is.

    strawberry reads frames as the protocol says they are (`message["type"]`,
    `payload["query"]`): a JSON value of another shape raised in the handler, which dropped
    the socket without a close frame and logged "Exception in ASGI application".
    """
    if not isinstance(message, dict):
        return "A message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in frames.types:
        return "Unknown message type"
    if kind in (frames.start, frames.stop) and not (
        isinstance(message.get("id"), str) and message["id"]
    ):
        return f"A {kind} message needs an id (a non-empty string)"
    payload = message.get("payload")
    if kind == frames.start:
        return request_problem(payload)
    if payload is not None and not isinstance(payload, dict):
        return "A payload must be a JSON object"
    return None


def request_problem(payload: object) -> str | None:
    """Why an operation's payload is not a GraphQL request; None when it is."""
    if not isinstance(payload, dict):
        return "An operation's payload must be a JSON object"
    if not (isinstance(payload.get("query"), str) and payload["query"]):
        return "An operation needs a query (a non-empty string)"
    for name, kind in REQUEST_FIELDS.items():
        if payload.get(name) is not None and not isinstance(payload[name], kind):
            return f"An operation's {name} must be a JSON {'string' if kind is str else 'object'}"
    return None


End = Callable[[int, str, str], Awaitable[None]]
"""Ends a socket the way its protocol can: (close code, reason, error code)."""


class SocketGuard:
    """The rules every websocket follows, whatever its protocol.

    It reads the principal from the socket's context each time, as the Gatekeeper does for
    each operation: whatever the latest connection_init authenticated.
    """

    def __init__(self, context: Context, frames: Frames, end: End) -> None:
        self.context, self.frames, self.end = context, frames, end
        self._init_timeout: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None

    async def admit(self, message: object) -> bool:
        """Whether the handler may act on a client's frame. When not, the socket is ended: a
        malformed frame with 4400, an operation after the token expired with 4403."""
        problem = frame_problem(message, self.frames)
        if problem is not None:
            await self.refuse(problem)
            return False
        if isinstance(message, dict) and message["type"] == self.frames.start and self.expired():
            await self.expire()
            return False
        return True

    async def refuse(self, problem: str) -> None:
        """End the socket for a frame its protocol cannot act on."""
        log.info("websocket closed: %s", problem)
        await self.end(MALFORMED, problem, "BAD_REQUEST")

    def expired(self) -> bool:
        principal = self.context.principal
        return principal is not None and principal.expired(time.time())

    async def expire(self) -> None:
        """End the socket: its token has expired (running subscriptions end with it)."""
        log.info("websocket closed: its token expired")
        await self.end(FORBIDDEN, EXPIRED, "UNAUTHENTICATED")

    def authenticated(self) -> None:
        """After a connection_ack: the socket ends when the token it was opened with expires
        (API keys never do)."""
        self._cancel(self._expiry)
        principal = self.context.principal
        if principal is not None and principal.expires_at is not None:
            self._expiry = asyncio.create_task(self._expire_at(principal.expires_at))

    async def _expire_at(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self.expire()

    def await_init(self, seconds: float) -> None:
        """Close the socket with 4408 unless connection_init arrives within `seconds`."""
        self._init_timeout = asyncio.create_task(self._time_out_init(seconds))

    def init_received(self) -> None:
        self._cancel(self._init_timeout)

    async def _time_out_init(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        log.info("websocket closed: no connection_init within %gs", seconds)
        await self.end(INIT_TIMEOUT, "Connection initialisation timeout", "REQUEST_TIMEOUT")

    def stop(self) -> None:
        """The socket is over: nothing is left to time."""
        self._cancel(self._init_timeout)
        self._cancel(self._expiry)

    @staticmethod
    def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is not None:
            task.cancel()


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """strawberry's graphql-transport-ws handler under the socket guard. A client gone while
    one of its subscriptions was being sent is an ordinary event (logged at DEBUG), not an
    error with a traceback in the operators' logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = SocketGuard(self.context, TRANSPORT_FRAMES, self.end)

    async def end(self, close_code: int, reason: str, code: str) -> None:
        """graphql-transport-ws says why in the close frame."""
        await self.websocket.close(close_code, reason)

    async def handle(self) -> None:
        try:
            await super().handle()
        finally:
            self.guard.stop()

    async def handle_message(self, message: Message) -> None:
        if await self.guard.admit(message):
            await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        # strawberry keeps the cancelled timer task, and with it its frame, as long as the socket
        self.connection_init_timeout_task = None
        if self.connection_acknowledged:
            self.guard.authenticated()

    async def handle_task_exception(self, error: Exception) -> None:
        if isinstance(error, WebSocketDisconnected):
            log.debug("a subscriber went away while a message was being sent to it")
            return
        await super().handle_task_exception(error)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """strawberry's, with the operation's delivery for a shared subscription to use."""
        DELIVERY.set(delivery(self, operation.id, "next", operation.query, operation.variables,
                              operation.operation_name))
        await super().run_operation(operation)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """strawberry's legacy graphql-ws handler under the socket guard, running any operation
    (as graphql-transport-ws does) and quiet about a client gone mid-send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = SocketGuard(self.context, LEGACY_FRAMES, self.end)

    async def end(self, close_code: int, reason: str, code: str) -> None:
        """graphql-ws has no close codes of its own: a `connection_error` says why first."""
        with suppress(WebSocketDisconnected):
            await self.send_message(
                {"type": "connection_error", "payload": {"message": reason, "code": code}}
            )
        await self.websocket.close(close_code, reason)

    async def handle(self) -> None:
        """strawberry's loop, except that a frame that is not JSON text is refused (it skipped
        invalid JSON silently and closed on a binary frame with 1002 and no word why), and that
        connection_init must come within WS_INIT_TIMEOUT_SECONDS."""
        self.guard.await_init(self.view.connection_init_wait_timeout.total_seconds())
        try:
            try:
                async for message in self.websocket.iter_json():
                    await self.handle_message(message)  # type: ignore[arg-type]
            except NonTextMessageReceived:
                await self.guard.refuse("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.guard.refuse("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            self.guard.stop()
            if self.keep_alive_task:
                self.keep_alive_task.cancel()
                with suppress(BaseException):
                    await self.keep_alive_task
            await self.cleanup()

    async def handle_message(self, message: legacy.OperationMessage) -> None:
        if await self.guard.admit(message):
            await super().handle_message(message)

    async def handle_connection_init(self, message: legacy.ConnectionInitMessage) -> None:
        self.guard.init_received()
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.guard.authenticated()

    async def handle_async_results(
        self, operation_id: str, query: str, operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """strawberry's, streaming any operation instead of subscriptions only.

        The protocol's `start` carries a query or a mutation as well (a data message, then
        complete); strawberry's answered them with an internal error and a traceback. A
        client gone while a message was being sent to it is logged at DEBUG.
        """
        DELIVERY.set(delivery(self, operation_id, "data", query, variables, operation_name))
        try:
            await self._send_results(operation_id, query, operation_name, variables)
        except WebSocketDisconnected:
            log.debug("a subscriber went away while a message was being sent to it")
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def _send_results(
        self, operation_id: str, query: str, operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        try:
            results = await self.schema.stream(
                query, variable_values=variables, context_value=self.context,
                root_value=self.root_value, operation_name=operation_name,
            )
            self.subscriptions[operation_id] = results
            first = True
            async for result in results:
                if first and isinstance(result, PreExecutionError) and result.errors:
                    await self.send_message(legacy.ErrorMessage(
                        type="error", id=operation_id, payload=result.errors[0].formatted
                    ))
                    return
                assert isinstance(result, ExecutionResult)  # no incremental delivery here
                await self.send_data_message(result, operation_id)
                first = False
        except asyncio.CancelledError:  # stopped by the client, or the socket closed
            pass
        await self.send_message(legacy.CompleteMessage(type="complete", id=operation_id))


def delivery(
    handler: TransportWSHandler | LegacyWSHandler, operation_id: str, message_type: str,
    query: str, variables: dict[str, object] | None, operation_name: str | None,
) -> Delivery:
    """How a shared subscription sends this operation's results: messages of `message_type`
    under its id, as strawberry's handler of the protocol writes them."""
    head = orjson.dumps({"id": operation_id, "type": message_type}).decode()
    adapter = handler.websocket
    assert isinstance(adapter, SocketAdapter)
    return Delivery(handler.view.channels, query, variables, operation_name,  # type: ignore[attr-defined]
                    f'{head[:-1]},"payload":', adapter.send_text)


class SocketAdapter(ASGIWebSocketAdapter):
    """strawberry's websocket adapter, for sockets that close under a task's feet.

    A socket may be closed by one of its own tasks (an expired token, a refused frame) while
    another sends on it, or by its client at any time: sending then means the client is gone
    (strawberry's WebSocketDisconnected, which the handlers take as ordinary), and closing it
    again does nothing. A close reason is cut to what a close frame holds: a longer one (a
    GraphQL syntax error echoing the client's text) failed the close itself.
    """

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await super().send_json(message)
        except SentAfterClose as error:
            raise WebSocketDisconnected from error

    async def send_text(self, text: str) -> bool:
        """Send a message encoded already (a shared subscription's); False if the client is
        gone (the operation then ends quietly, as when `send_json` finds it gone)."""
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, SentAfterClose):
            log.debug("a subscriber went away while a message was being sent to it")
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        fitting = reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")
        with suppress(WebSocketDisconnect, SentAfterClose):
            await self.ws.close(code, fitting)
