"""Starts `python -m app serve` in a fresh directory for a benchmark, and stops it.

The server gets none of our environment but the settings named here and what any process needs
(tests/harness/environment.py); it runs in that directory, where no `.env` is read.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.embedded_redis import free_port
from tests.harness.environment import app_environment


@dataclass
class Server:
    url: str
    ws_url: str
    process: subprocess.Popen[bytes]

    def rss_kib(self) -> int:
        """Resident memory of the server process."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(
            line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")
        ))


@contextlib.contextmanager
def running(
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[Server]:
    """The service in a fresh directory; `prepare(directory)` runs before it starts."""
    with tempfile.TemporaryDirectory() as tmp:
        if prepare is not None:
            prepare(Path(tmp))
        port = free_port()
        env = app_environment(Path(tmp), {
            "VAR_DIR": tmp, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/events.db",
            "LOG_LEVEL": "WARNING", **(extra_env or {}),
        })
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), *args], cwd=tmp, env=env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{url}/readyz", process, 30)
            yield Server(f"{url}/graphql", f"ws://127.0.0.1:{port}/graphql", process)
        finally:
            stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until `url` answers 200; RuntimeError if `process` exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url).status_code == 200:
                return
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{url} did not become ready")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL after 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
