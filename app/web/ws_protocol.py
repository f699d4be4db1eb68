"""uvicorn's websockets-sansio protocol, lighter per socket: what 10 000 idle subscribers hold.

- Its receive queue and its `writable` event are app/slim.py's (≈ 4 KiB of empty deques less).
- The handshake's request and response (their header objects, ≈ 3.5 KiB) are dropped once the
  socket is accepted: uvicorn reads them only until then. The request's headers are emptied
  too: the websockets parser's suspended generator keeps the request itself for good.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.slim import Flag, Inbox


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        """Called once the handshake's response is sent (never per message)."""
        super().start_keepalive()
        self.request.headers.clear()  # the scope has its own copy of them
        self.request = self.response = None  # type: ignore[assignment]
