"""The ASGI application: GraphQL on /graphql, health, readiness and metrics, owned by a lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type

from app.bootstrap import Services, bootstrap
from app.observability import WEBSOCKETS, correlation_id, new_correlation_id
from app.schema import build_schema
from app.schema.context import Context
from app.settings import Settings

log = logging.getLogger(__name__)


class GraphQLApp(GraphQL[Context, None]):
    def __init__(self, services: Services) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql")
        self.services = services

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return Context(self.services, correlation_id.get() or new_correlation_id())

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry answers a JSON body that is not an object or list (`"x"`, `5`, `null`)
        with a 500 (it calls `.get` on it): refuse it as a bad request instead."""
        content_type, _ = parse_content_type(request.content_type or "")
        if request.method == "POST" and "application/json" in content_type:
            body = self.parse_json(await request.get_body())  # Starlette caches the body
            if not isinstance(body, dict | list):
                raise HTTPException(400, "The request body must be a JSON object.")
        return await super().parse_http_body(request)


class CorrelationId:
    """Takes X-Request-ID (or makes one), exposes it to logs and events, echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        valid = 0 < len(given) <= 200 and given.isprintable()
        request_id = given if valid else new_correlation_id()
        token = correlation_id.set(request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    holder: dict[str, GraphQLApp] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with bootstrap(settings) as services:
            holder["graphql"] = GraphQLApp(services)
            _app.state.services = services
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

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    if settings.spa_dir.is_dir():  # the built frontend-example at /, after every other route
        app.mount("/", StaticFiles(directory=settings.spa_dir, html=True), name="spa")
    app.add_middleware(CorrelationId)
    return app
