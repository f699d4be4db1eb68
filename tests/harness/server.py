"""Runs the real service (`python -m app serve`) in a subprocess for end-to-end tests.

The server gets its own VAR_DIR and SQLite file in a temporary directory; without a REDIS_URL it
starts its embedded Valkey there. It is stopped the way an operator stops it (SIGTERM), and the
helper checks that it really exited and took its embedded Valkey with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.embedded_redis import free_port
from tests.harness.environment import app_environment

CLI_TIMEOUT_SECONDS = 120
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def app_env(
    work_dir: Path, redis_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of an app process started in `work_dir` whose state lives entirely
    there: only the settings given here (tests/harness/environment.py), none of ours."""
    settings = {
        "VAR_DIR": str(work_dir / "var"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{work_dir / 'events.db'}",
        "LOG_JSON": "true",
    }
    if redis_url is not None:
        settings["REDIS_URL"] = redis_url
    return app_environment(work_dir, {**settings, **(extra or {})})


def run_cli(
    work_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m app <args>` with all its state under `work_dir`; fails the test on timeout."""
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=work_dir, env=app_env(work_dir, extra=env), capture_output=True, text=True,
        timeout=CLI_TIMEOUT_SECONDS, check=False,
    )
    assert result.returncode == 0, (
        f"python -m app {' '.join(args)} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    work_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def embedded_valkey_info(self) -> Path:
        return self.work_dir / "var" / "valkey" / "server.json"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """The server process's resident set size (Linux /proc), in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


def _spawn(
    work_dir: Path, args: Sequence[str], log_path: Path, redis_url: str | None,
    extra_env: Mapping[str, str] | None,
) -> subprocess.Popen[bytes]:
    work_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            cwd=work_dir,  # no stray .env, and any relative path lands in the temporary directory
            env=app_env(work_dir, redis_url, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C aimed at pytest does not hit the server first
        )


def start_server(
    work_dir: Path, redis_url: str | None = None, extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (), ready: bool = True,
) -> RunningServer:
    """Start `python -m app serve` and return once /healthz and (`ready`) /readyz answer 200.

    `extra_args` go to `serve` (for example `--no-projector`).
    """
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    log_path = work_dir / "server.log"
    process = _spawn(work_dir, args, log_path, redis_url, extra_env)
    server = RunningServer(process, port, work_dir, log_path)
    try:
        _wait_until_ready(server, ready)
    except BaseException:
        stop_server(server, check=False)
        raise
    return server


def _wait_until_ready(server: RunningServer, ready: bool = True) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    pending = ["/healthz", "/readyz"] if ready else ["/healthz"]
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while pending:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.process.returncode} during start-up:\n"
                    f"{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"server not ready within {START_TIMEOUT_SECONDS}s (waiting for "
                    f"{pending[0]}):\n{server.log_tail()}"
                )
            try:
                if client.get(pending[0]).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval while the process boots, not an assertion


def stop_server(server: RunningServer, check: bool = True) -> None:
    """SIGTERM, wait, and (when `check`) assert a clean exit that also stopped embedded Valkey."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only the server and children
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if check:
            raise AssertionError(
                f"server ignored SIGTERM for {STOP_TIMEOUT_SECONDS}s and was killed:\n"
                f"{server.log_tail()}"
            ) from None
        return
    if not check:
        return
    assert process.returncode == 0, (
        f"server exited with {process.returncode} after SIGTERM:\n{server.log_tail()}"
    )
    assert not server.embedded_valkey_info.exists(), (
        "the embedded Valkey was not stopped with the server"
    )


@contextmanager
def running_server(
    work_dir: Path, redis_url: str | None = None, extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (), ready: bool = True,
) -> Iterator[RunningServer]:
    server = start_server(work_dir, redis_url, extra_env, extra_args, ready)
    try:
        yield server
    finally:
        stop_server(server)


@dataclass
class RunningProjector:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_projector(
    work_dir: Path, redis_url: str, extra_env: Mapping[str, str] | None = None
) -> Iterator[RunningProjector]:
    """`python -m app project` (the projector alone) against an external Redis.

    It serves nothing, so there is no readiness to wait for: callers observe its progress
    through an API process (for example with `minPosition`). Stopped with SIGTERM (or SIGKILL
    after STOP_TIMEOUT_SECONDS); it must not have died before that.
    """
    log_path = work_dir / "projector.log"
    process = _spawn(work_dir, ["project"], log_path, redis_url, extra_env)
    projector = RunningProjector(process, log_path)
    try:
        yield projector
        assert process.poll() is None, (
            f"the projector died with {process.returncode}:\n{projector.log_tail()}"
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
