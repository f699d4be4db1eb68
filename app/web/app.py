"""The ASGI application: GraphQL on /graphql, health, readiness and metrics, owned by a lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from app.auth import parse_origins
from app.bootstrap import bootstrap
from app.observability import WEBSOCKETS, configure_logging, worker_stopped
from app.runtime import settle_heap
from app.settings import Settings
from app.web.edge import HttpEdge
from app.web.graphiql import GraphiQLAssets
from app.web.graphql import GraphQLApp
from app.web.hosts import LOOPBACK_NAMES, AllowedHosts
from app.web.probes import healthz, metrics, readyz


def create_app(settings: Settings | None = None) -> Starlette:
    """The service's ASGI app (Settings from the environment by default); uvicorn's factory."""
    settings = settings or Settings()
    if not logging.getLogger().handlers:  # a `serve --workers N` worker: a fresh interpreter
        configure_logging(settings.log_level, settings.log_format, settings.log_json)
    holder: dict[str, GraphQLApp] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            async with bootstrap(settings) as services:
                holder["graphql"] = GraphQLApp(services)
                _app.state.services = services
                settle_heap(settings.gc_threshold)
                yield
        finally:
            worker_stopped()

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

    app = Starlette(
        routes=[
            Route("/healthz", healthz),  # /graphql is dispatched by HttpEdge
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    if settings.graphiql:  # the page itself is GET /graphql (app/web/graphql.py)
        app.mount("/graphiql/assets", GraphiQLAssets(), name="graphiql")
    if settings.spa_dir.is_dir():  # the built frontend-example at /, after every other route
        app.mount("/", StaticFiles(directory=settings.spa_dir, html=True), name="spa")
    # The last added runs first: CORS (so that refusals carry CORS headers a browser can
    # read), then the edge: host check, request id, deadline, body limit, and /graphql.
    # ALLOWED_HOSTS unset is set by `serve` from its --host; served some other way: loopback.
    hosts = AllowedHosts(settings.allowed_hosts or ",".join(LOOPBACK_NAMES))
    app.add_middleware(
        HttpEdge, graphql=graphql, max_bytes=settings.max_body_bytes,
        seconds=settings.request_timeout_seconds, hosts=hosts,
    )
    origins = parse_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"], max_age=600,
        )
    return app
