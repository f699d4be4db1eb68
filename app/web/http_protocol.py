"""uvicorn's HTTP/1.1 protocol (httptools) with the two limits on a request's head it lacks.

uvicorn bounds a head only with h11 (`h11_max_incomplete_event_size`); `serve` runs httptools
(a parser in C, uvicorn's own choice when it is installed), which buffers a header of any size
and waits for the rest of a head forever. This protocol adds:

- MAX_HEADER_BYTES: a head (request target, header names and values) larger than this is
  answered 431 `REQUEST_TOO_LARGE` and its connection closed: counted as the bytes arrive, so
  an endless head is never buffered past the limit by more than one read (256 KiB), and again
  once complete, for a head that came in few reads.
- HEADER_TIMEOUT_SECONDS: a connection whose head is not complete this long after it opened, or
  after the head's first byte, is closed, with a 408 `REQUEST_TIMEOUT` when part of a head had
  come: a client that sends its head byte by byte (slowloris) holds a connection no longer than
  that, however steadily it sends. Between requests uvicorn's keep-alive timeout (5 s) closes
  an idle connection.

uvicorn makes one protocol per connection from its `Config`, which carries no settings of ours
to `--workers` processes: the limits are read once per process, from the same environment as
the app's.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
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
        self._awaited_since: float | None = None  # since when a head is awaited (loop time)
        self._head_open = False  # a head has begun and is not complete
        self._heads = 0  # heads begun on this connection
        self._head_bytes = 0  # bytes of the reads that fell wholly inside the open head
        self._read_size = 0  # bytes of the read being parsed
        self._continued = False  # whether that read continues a head begun before it
        self._head_too_large = False
        self._lingering = False

    # The deadline. A head is awaited from the connection's opening, or from its first byte,
    # until it is complete (between requests uvicorn's keep-alive timeout closes an idle
    # connection). One timer per connection rather than one per request: when it fires it
    # closes the connection if the awaited head is late, or else sets itself for when the head
    # awaited now would be.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._heads, self._head_bytes = True, self._heads + 1, 0
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._awaited_since is None and self.head_timeout > 0:
            self._awaited_since = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        if self._awaited_since is None:
            return  # no head awaited: the next one sets the timer again
        left = self._awaited_since + self.head_timeout - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._check_head)
            return
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
        heads, self._read_size, self._continued = self._heads, len(data), self._head_open
        super().data_received(data)
        if (self._continued and self._head_open and self._heads == heads
                and not self.transport.is_closing()):
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_large_head()

    def on_headers_complete(self) -> None:
        self._head_open, self._awaited_since = False, None
        # A head begun and complete within one read is no larger than that read.
        if (self._continued or self._read_size > self.max_head_bytes) and self._head_size() > (
            self.max_head_bytes
        ):
            # Inside the parser: the request goes on (its body is read and dropped), to an app
            # of one answer; a websocket handshake is refused when the parser hands it over.
            self._head_too_large = True
            app, self.app = self.app, self._large_head_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(map(len, itertools.chain.from_iterable(self.headers)))

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
