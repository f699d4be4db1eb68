"""The GraphQL view: strawberry's ASGI app with our context, auth and JSON (its websocket
handlers are in app/web/websockets.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.types.unset import UnsetType

from app.auth import Authenticator, AuthError, parse_origins
from app.bootstrap import Services
from app.observability import REJECTIONS, correlation_id, new_correlation_id
from app.schema import build_schema
from app.schema.context import Context
from app.schema.errors import OPERATION_REFUSALS
from app.schema.sharing import Channels
from app.web.edge import error_body
from app.web.graphiql import graphiql_page
from app.web.posted import PlainPosts
from app.web.websockets import LegacyWSHandler, SocketAdapter, TransportWSHandler


class GraphQLApp(GraphQL[Context, None]):
    """The schema over `services`: a Context per request (authenticated when auth is on),
    websockets authenticated on connect, JSON by orjson."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    websocket_adapter_class = SocketAdapter

    def __init__(self, services: Services) -> None:
        settings = services.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,  # our page, not the CDN's
            connection_init_wait_timeout=dt.timedelta(seconds=settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=parse_origins(settings.cors_origins),
        )
        self.services = services
        self.channels = Channels(services.hub)
        self.authenticator = Authenticator(settings)
        self.plain_posts = PlainPosts(
            lambda accept: self._get_stream_transport_from_headers({"accept": accept}) is not None
        )
        if self.authenticator.jwks is not None:
            services.spawn(self.authenticator.jwks.keep_fresh(), "jwks")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As the library's, but a request it refuses before executing anything (a body that is
        not JSON or not an object, no query, a mutation by GET, an unknown operation name) gets
        its status with a GraphQL error body, not plain text: clients read one shape. A
        browser's page request with GRAPHIQL=false still gets a plain 404: no page is here."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            posted = await self.plain_posts.read(request)
            if posted is None:
                response = await self.run(request)
            else:
                response = await self._answer(request, posted)
        except HTTPException as refusal:
            if refusal.status_code == 404:
                response = PlainTextResponse(refusal.reason, 404)
            else:
                response = refusal_response(refusal)
        await response(scope, receive, send)

    async def _answer(self, request: Request, posted: GraphQLRequestData) -> Response:
        """A plain JSON POST (app/web/posted.py) run as the library's view runs it, without
        what only other requests need."""
        context = await self.get_context(request, None)
        no_sub_response = cast(Response, None)  # the library's execute_single takes, not uses, one
        result = await self.execute_single(
            request, self.request_adapter_class(request), no_sub_response, context, None, posted
        )
        return Response(orjson.dumps(await self.process_result(request, result)),
                        media_type="application/json")

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the service's own files (app/web/graphiql.py)."""
        return graphiql_page()

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(self.services, correlation_id.get() or new_correlation_id())
        if self.authenticator.enabled:
            header = request.headers.get("authorization")
            try:
                context.principal = await self.authenticator.fetching_keys(
                    lambda: self.authenticator.from_header(header)
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
            context.principal = await self.authenticator.fetching_keys(
                lambda: self.authenticator.from_connection_params(params)
            )
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


def refusal_response(refusal: HTTPException) -> Response:
    """The library's refusal as a GraphQL error: GRAPHQL_VALIDATION_FAILED when the document
    names no operation the request may run (as over a websocket), else BAD_REQUEST: the HTTP
    request itself is malformed."""
    refused_operation = isinstance(refusal.__cause__, OPERATION_REFUSALS)
    code = "GRAPHQL_VALIDATION_FAILED" if refused_operation else "BAD_REQUEST"
    return Response(error_body(refusal.reason, code), refusal.status_code,
                    media_type="application/json")
