"""The ASGI application: GraphQL on /graphql, health, readiness and metrics, owned by a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UnsetType

from app.auth import Authenticator, AuthError, parse_origins
from app.bootstrap import Services, bootstrap
from app.observability import (
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
    REJECTIONS,
    WEBSOCKETS,
    configure_logging,
    correlation_id,
    new_correlation_id,
)
from app.runtime import settle_heap
from app.schema import build_schema
from app.schema.context import Context
from app.settings import Settings

log = logging.getLogger(__name__)


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """strawberry's graphql-transport-ws handler, except for a client that went away while one
    of its subscriptions was being sent: that is an ordinary event (logged at DEBUG), not an
    error with a traceback in the operators' logs."""

    async def handle_task_exception(self, error: Exception) -> None:
        if isinstance(error, WebSocketDisconnected):
            log.debug("a subscriber went away while a message was being sent to it")
            return
        await super().handle_task_exception(error)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """strawberry's legacy graphql-ws handler, with the same care: its subscription task
    raised on a client gone mid-send, and asyncio logged "Task exception was never
    retrieved"."""

    async def handle_async_results(
        self, operation_id: str, query: str, operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        try:
            await super().handle_async_results(operation_id, query, operation_name, variables)
        except WebSocketDisconnected:
            log.debug("a subscriber went away while a message was being sent to it")


class GraphQLApp(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, services: Services) -> None:
        settings = services.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql",
            connection_init_wait_timeout=dt.timedelta(seconds=settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=parse_origins(settings.cors_origins),
        )
        self.services = services
        self.authenticator = Authenticator(settings)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(self.services, correlation_id.get() or new_correlation_id())
        if self.authenticator.enabled:
            try:
                context.principal = self.authenticator.from_header(
                    request.headers.get("authorization")
                )
            except AuthError as error:  # refused when an operation executes
                context.principal, context.auth_error = None, error
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate a websocket from its connection_init payload (or its handshake header)."""
        if not self.authenticator.enabled:
            return await super().on_ws_connect(context)
        params = context.connection_params or {}
        if context.auth_error is None and context.principal is not None and not params:
            return await super().on_ws_connect(context)  # the handshake's Authorization header
        try:
            context.principal = self.authenticator.from_connection_params(params)
        except AuthError as error:
            REJECTIONS.labels("unauthenticated").inc()
            raise ConnectionRejectionError({"message": error.message, "code": error.code}) from None
        context.auth_error = None
        return await super().on_ws_connect(context)

    def decode_json(self, data: str | bytes) -> object:
        """orjson: UTF-8 only (other bytes are a bad request, not a guessed encoding), and its
        JSONDecodeError is the standard one, which the view answers with a 400."""
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        """Text (websocket messages must be text frames), orjson's speed."""
        return orjson.dumps(data).decode()

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry answers a JSON body that is not an object or list (`"x"`, `5`, `null`)
        with a 500 (it calls `.get` on it): refuse it as a bad request instead. The body is
        looked at again only then (Starlette caches it): a good request is parsed once."""
        try:
            return await super().parse_http_body(request)
        except AttributeError:
            if request.method == "POST" and not isinstance(
                self.parse_json(await request.get_body()), dict | list
            ):
                raise HTTPException(400, "The request body must be a JSON object.") from None
            raise


def _error_body(message: str, code: str) -> bytes:
    error = {"message": message, "extensions": {"code": code}}
    return json.dumps({"data": None, "errors": [error]}).encode()


async def _send_error(
    send: Send, status: int, message: str, code: str, more_body: bool = False
) -> None:
    body = _error_body(message, code)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (names are lower-case in ASGI)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class HttpEdge:
    """What every request meets first, in one layer with one wrapper around `send`:

    - its correlation id: X-Request-ID taken (or made), exposed to logs and events, echoed back;
    - the body limit: a body over `max_bytes` is refused with 413, at once when Content-Length
      says so, otherwise as soon as that many bytes have arrived (the rest is never read);
    - the deadline: an HTTP request not answered within `seconds` gets a 503 GraphQL error, and
      its work is cancelled (websockets live as long as they like: subscriptions are long by
      design);
    - `/graphql` goes straight to `graphql`, everything else through the router.
    """

    LINGER_SECONDS = 2.0

    def __init__(
        self, app: ASGIApp, graphql: ASGIApp, max_bytes: int, seconds: float
    ) -> None:
        self.app, self.graphql = app, graphql
        self.max_bytes, self.seconds = max_bytes, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        app = self.graphql if scope["path"] == "/graphql" else self.app
        given = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        valid = 0 < len(given) <= 200 and given.isprintable()
        request_id = given if valid else new_correlation_id()
        token = correlation_id.set(request_id)
        try:
            if kind == "websocket":
                await app(scope, receive, send)
            else:
                await self._http(app, scope, receive, send, request_id)
        finally:
            correlation_id.reset(token)

    async def _http(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        started = False
        echo = (b"x-request-id", request_id.encode())

        async def send_edge(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        # What asyncio.timeout does, with one timer handle and no context object: cancel the
        # request's task when the time is up, and tell that cancellation from any other.
        task = asyncio.current_task()
        assert task is not None
        expired, cancelling = False, task.cancelling()

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = (asyncio.get_running_loop().call_later(self.seconds, expire)
                 if self.seconds > 0 else None)
        try:
            declared = _header(scope, b"content-length")
            if declared is None:  # chunked: counted as it arrives, then replayed
                replay = await self._buffered(receive, send_edge)
                if replay is not None:
                    await app(scope, replay, send_edge)
            elif not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(receive, send_edge)
            else:  # the server frames the body by Content-Length: it cannot grow past it
                await app(scope, receive, send_edge)
        except asyncio.CancelledError:
            if not expired or task.uncancel() > cancelling:
                raise  # cancelled from outside (the server stopping), not by this timer
        else:
            if expired:  # finished in the same step the timer fired: keep no cancel pending
                task.uncancel()
            return
        finally:
            if timer is not None:
                timer.cancel()
        REJECTIONS.labels("timeout").inc()
        log.warning("request to %s cancelled after %ss", scope.get("path"), self.seconds)
        if not started:
            await _send_error(
                send_edge, 503, f"The request took longer than {self.seconds:g} s; try again.",
                "REQUEST_TIMEOUT",
            )

    async def _buffered(self, receive: Receive, send: Send) -> Receive | None:
        """Read a body without Content-Length up to the limit; a `receive` that replays it, or
        None when it was too large (and refused)."""
        messages: list[Any] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(receive, send)
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        return replay

    async def _refuse(self, receive: Receive, send: Send) -> None:
        """Answer 413 at once, then discard what the client is still sending for a moment
        (a "lingering close": closing on unread data resets the connection, and a client still
        uploading would lose the 413), never keeping any of it."""
        REJECTIONS.labels("body_too_large").inc()
        await _send_error(
            send, 413, f"The request body is larger than {self.max_bytes} bytes.",
            "REQUEST_TOO_LARGE", more_body=True,
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.LINGER_SECONDS):
                while (message := await receive())["type"] == "http.request" and message.get(
                    "more_body", False
                ):
                    pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    if not logging.getLogger().handlers:  # a `serve --workers N` worker: a fresh interpreter
        configure_logging(settings.log_level, settings.log_json)
    holder: dict[str, GraphQLApp] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with bootstrap(settings) as services:
            holder["graphql"] = GraphQLApp(services)
            _app.state.services = services
            settle_heap(settings.gc_threshold)
            yield

    class GraphQLEndpoint:
        """The schema's ASGI app, which exists once the lifespan has built the services."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "websocket":
                await holder["graphql"](scope, receive, send)
                return
            WEBSOCKETS.inc()
            try:
                await holder["graphql"](scope, receive, send)
            finally:
                WEBSOCKETS.dec()

    graphql = GraphQLEndpoint()

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        services: Services = request.app.state.services
        checks = {"event_store": False, "redis": False}
        try:
            await services.store.head_position()
            checks["event_store"] = True
        except Exception as exc:
            log.warning("readiness: event store unreachable: %s", exc)
        try:
            checks["redis"] = await services.read_model.ping()
        except Exception as exc:
            log.warning("readiness: redis unreachable: %s", exc)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        await _projection_lag(request.app.state.services)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),  # /graphql is dispatched by HttpEdge
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    if settings.spa_dir.is_dir():  # the built frontend-example at /, after every other route
        app.mount("/", StaticFiles(directory=settings.spa_dir, html=True), name="spa")
    # The last added runs first: CORS (so that refusals carry CORS headers a browser can
    # read), then the edge: request id, deadline, body limit, and /graphql.
    app.add_middleware(
        HttpEdge, graphql=graphql, max_bytes=settings.max_body_bytes,
        seconds=settings.request_timeout_seconds,
    )
    origins = parse_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"], max_age=600,
        )
    return app


async def _projection_lag(services: Services) -> None:
    """Projection lag, measured at scrape time: events behind, and the age of the oldest one."""
    try:
        checkpoint = await services.read_model.checkpoint()
        head = await services.read_model.head()
        behind = max(head - checkpoint, 0)
        seconds = 0.0
        if behind:
            oldest = await services.store.read_all(checkpoint, 1)
            if oldest:
                age = dt.datetime.now(dt.UTC) - oldest[0].recorded_at
                seconds = max(age.total_seconds(), 0.0)
    except Exception as exc:  # a scrape must still answer: the gauges keep their last value
        log.warning("projection lag unavailable: %s", exc)
        return
    PROJECTION_LAG_EVENTS.set(behind)
    PROJECTION_LAG_SECONDS.set(seconds)
