"""Raw ASGI that every request meets first: host check, request id, deadline, body limit,
/graphql dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from app.observability import HTTP_REQUESTS, REJECTIONS, correlation_id, new_correlation_id
from app.web.hosts import UNCHECKED_PATHS, AllowedHosts

# The name these lines carried before app/main.py became app/web/: log filters match on it.
log = logging.getLogger("app.main")


def error_body(message: str, code: str) -> bytes:
    """A GraphQL response with no data and one error, `code` in its extensions."""
    error = {"message": message, "extensions": {"code": code}}
    return json.dumps({"data": None, "errors": [error]}).encode()


async def send_error(
    send: Send, status: int, message: str, code: str, more_body: bool = False
) -> None:
    """Answer `status` with that body and close the connection after it."""
    body = error_body(message, code)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


# The labels of cqrs_http_requests_total stay few whatever clients send: unknown methods and
# paths are counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PATH_KINDS = {"/graphql": "graphql", "/healthz": "healthz", "/readyz": "readyz",
              "/metrics": "metrics"}
# The counter's child per label values: `labels()` costs ten times what `inc()` does.
_requests: dict[tuple[str, str, int | None], Counter] = {}


def _count(scope: Scope, status: int | None) -> None:
    """One HTTP request in cqrs_http_requests_total."""
    method = scope["method"] if scope["method"] in METHODS else "other"
    path = scope["path"]
    kind = PATH_KINDS.get(path) or ("graphiql" if path.startswith("/graphiql/") else "other")
    child = _requests.get((method, kind, status))
    if child is None:
        label = "none" if status is None else str(status)
        child = _requests[method, kind, status] = HTTP_REQUESTS.labels(method, kind, label)
    child.inc()


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (names are lower-case in ASGI)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _refuse_host(
    scope: Scope, receive: Receive, send: Send, host: bytes | None
) -> None:
    """400 with a GraphQL error to a request; a websocket's handshake is closed, which uvicorn
    answers with 403 (a handshake response of the app's own could carry the same body, but
    uvicorn's websockets-sansio protocol then logs an ERROR)."""
    REJECTIONS.labels("host_not_allowed").inc()
    shown = (host or b"").decode("latin-1")[:200]
    log.info("refused a request for host %r: not in ALLOWED_HOSTS", shown)
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})
        return
    await send_error(send, 400, "This server does not answer for the host named in the request.",
                     "HOST_NOT_ALLOWED")


class HttpEdge:
    """What every request meets first, in one layer with one wrapper around `send`:

    - the host check: a request whose `Host` is not one of ALLOWED_HOSTS is answered 400
      (`HOST_NOT_ALLOWED`), a websocket 403, before anything else runs (app/web/hosts.py);
    - its correlation id: X-Request-ID taken (or made), exposed to logs and events, echoed back;
    - the body limit: a body over `max_bytes` is refused with 413, at once when Content-Length
      says so, otherwise as soon as that many bytes have arrived (the rest is never read);
    - the deadline: an HTTP request not answered within `seconds` gets a 503 GraphQL error, and
      its work is cancelled (websockets live as long as they like: subscriptions are long by
      design);
    - `/graphql` goes straight to `graphql`, everything else through the router;
    - every HTTP request is counted by method, kind of path and status (the status it sends).
    """

    LINGER_SECONDS = 2.0

    def __init__(
        self, app: ASGIApp, graphql: ASGIApp, max_bytes: int, seconds: float,
        hosts: AllowedHosts,
    ) -> None:
        self.app, self.graphql = app, graphql
        self.max_bytes, self.seconds = max_bytes, seconds
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not self.hosts.allows(host) and scope["path"] not in UNCHECKED_PATHS:
            await _refuse_host(scope, receive, send, host)
            if kind == "http":
                _count(scope, 400)
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
        status: int | None = None  # none yet: the response has not started
        echo = (b"x-request-id", request_id.encode())

        async def send_edge(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
                _count(scope, status)  # as it begins: a 413 lingers on after it
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
            REJECTIONS.labels("timeout").inc()
            log.warning("request to %s cancelled after %ss", scope.get("path"), self.seconds)
            if status is None:
                await send_error(
                    send_edge, 503, f"The request took longer than {self.seconds:g} s; try again.",
                    "REQUEST_TIMEOUT",
                )
        else:
            if expired:  # finished in the same step the timer fired: keep no cancel pending
                task.uncancel()
        finally:
            if timer is not None:
                timer.cancel()
            if status is None:  # ended without an answer (the client left, the server stops)
                _count(scope, None)

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
        await send_error(
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
