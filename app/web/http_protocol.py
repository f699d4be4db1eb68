"""uvicorn's HTTP/1.1 protocol (httptools) with the two limits on a request's head it lacks.

uvicorn bounds a head only with h11 (`h11_max_incomplete_event_size`); `serve` runs httptools
(a parser in C, uvicorn's own choice when it is installed), which buffers a header of any size
and waits for the rest of a head forever. This protocol adds:

- MAX_HEADER_BYTES: a head (request target, header names and values) larger than this is
  answered 431 `REQUEST_TOO_LARGE` and its connection closed: counted as the bytes arrive, so
  an endless head is never buffered past the limit by more than one read (256 KiB), and again
  once complete, for a head that came in few reads.
- HEADER_TIMEOUT_SECONDS: a connection whose next head is not complete this long after it
  opened, or after its previous response, is closed, with a 408 `REQUEST_TIMEOUT` when part of
  a head had come: a client that sends its head byte by byte (slowloris) holds a connection no
  longer than that, however steadily it sends. uvicorn's keep-alive timeout (5 s) still closes
  an idle connection sooner.

uvicorn makes one protocol per connection from its `Config`, which carries no settings of ours
to `--workers` processes: the limits are read once per process, from the same environment as
the app's.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.observability import REJECTIONS
from app.settings import Settings
from app.web.edge import error_body, send_error

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
LINGER_SECONDS = 2.0


@functools.cache
def _limits() -> tuple[int, float]:
    settings = Settings()
    return settings.max_header_bytes, settings.header_timeout_seconds


class HttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.head_timeout = _limits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_open = False  # a head has begun and is not complete
        self._heads = 0  # heads begun on this connection
        self._head_bytes = 0  # bytes of the reads that fell wholly inside the open head
        self._head_too_large = False
        self._lingering = False

    # The deadline: armed while a head is awaited, cancelled once it is complete.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._heads, self._head_bytes = True, self._heads + 1, 0
        self._await_head()  # already armed unless the previous request is still being answered

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle: the next head is awaited
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is None and self.head_timeout > 0:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        REJECTIONS.labels("header_timeout").inc()
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._head_open and not answering:  # a client is sending a head, not idling
            self._answer(408, f"The request's headers took longer than {self.head_timeout:g} s.",
                         "REQUEST_TIMEOUT")
        self.transport.close()

    # The size.

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        inside, heads = self._head_open, self._heads
        super().data_received(data)
        if inside and self._head_open and self._heads == heads and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_large_head()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._stop_head_timer()
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size <= self.max_head_bytes:
            super().on_headers_complete()
            return
        # Inside the parser: the request goes on (its body is read and dropped), to an app of
        # one answer; a websocket handshake is refused when the parser hands it over.
        self._head_too_large = True
        app, self.app = self.app, self._large_head_app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def handle_websocket_upgrade(self) -> None:
        if self._head_too_large:
            self._refuse_large_head()
            return
        super().handle_websocket_upgrade()

    def _large_head_message(self) -> str:
        return f"The request's headers are larger than {self.max_head_bytes} bytes."

    async def _large_head_app(self, _scope: Scope, _receive: Receive, send: Send) -> None:
        REJECTIONS.labels("headers_too_large").inc()
        await send_error(send, 431, self._large_head_message(), "REQUEST_TOO_LARGE")

    def _refuse_large_head(self) -> None:
        """431, then a lingering close: what the client is still sending is read and dropped for
        a moment after the answer and its end of stream, since closing on unread data resets the
        connection and a client still sending would lose the answer."""
        REJECTIONS.labels("headers_too_large").inc()
        self._answer(431, self._large_head_message(), "REQUEST_TOO_LARGE")
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _answer(self, status: int, message: str, code: str) -> None:
        """A response written straight to the connection, for a request that never became one."""
        body = error_body(message, code)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body)
        )
