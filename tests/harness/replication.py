"""Redis replication in real processes, for the replica and failover tests
(tests/e2e/test_replicas.py) and bench/replicas.py.

- `start_replica`: a `redis-server --replicaof` of a primary (or of a proxy in front of it),
  returned once its link is up and it holds the primary's data.
- `DelayProxy`: a TCP proxy on its own thread and event loop that holds every byte from the
  primary for `delay` seconds before passing it on (the replication stream), and passes the
  replica's bytes (its acknowledgements) at once: a replica that is always that far behind.
- `Sentinels`: three `redis-server --sentinel` processes monitoring one primary, quick to
  declare it down.
- `command_calls`: a server's `INFO commandstats` as {command: calls}.

Each process is one `RedisServer` (tests/harness/cluster.py): started on a free port in its own
session, stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.harness.cluster import STOP_TIMEOUT_SECONDS, RedisServer
from tests.harness.server import free_port

SERVICE = "mymaster"
LINK_SECONDS = 30.0


def sync_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5.0)


def start_primary(work_dir: Path) -> RedisServer:
    server = RedisServer(work_dir)
    server.start()
    return server


def start_replica(work_dir: Path, primary: RedisServer, via_port: int | None = None) -> RedisServer:
    """A replica of `primary` (connected through `via_port`, a proxy, if given), once in sync."""
    port = primary.port if via_port is None else via_port
    replica = RedisServer(work_dir, args=["--replicaof", "127.0.0.1", str(port)])
    replica.start()
    wait_in_sync(replica)
    return replica


def wait_in_sync(replica: RedisServer, seconds: float = LINK_SECONDS) -> None:
    """Until the replica's link to its primary is up and its initial sync is loaded."""
    deadline = time.monotonic() + seconds
    with sync_client(replica.port) as client:
        while True:
            info = client.info("replication")
            if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica on {replica.port} not in sync: {info}")
            time.sleep(0.05)  # polling interval while it syncs


def command_calls(port: int) -> dict[str, int]:
    """{command: calls} from `INFO commandstats` (`cmdstat_get` → `get`)."""
    with sync_client(port) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def reset_stats(*ports: int) -> None:
    for port in ports:
        with sync_client(port) as client:
            client.config_resetstat()


def kill(server: RedisServer) -> None:
    """SIGKILL (no shutdown, no last words to its replicas), and reap it."""
    process = server.process
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    server.process = None


def cpu_seconds(server: RedisServer) -> float:
    """The server's user + system CPU time so far, from INFO (its own accounting)."""
    with sync_client(server.port) as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# A delayed link.


class DelayProxy:
    """Forwards 127.0.0.1:`port` to `target_port`, holding the target's bytes `delay` seconds."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._started.wait(10.0):
            raise TimeoutError("the delay proxy did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(10.0)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port)
        )
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        self._loop.call_later(0.1, self._loop.stop)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for work in (self._pipe(reader, up_writer, 0.0), self._pipe(up_reader, writer, self.delay)):
            task = asyncio.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    delay: float) -> None:
        """Copy until EOF; with `delay`, each chunk goes out `delay` after it came in, in order."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await held.get()
                if not data:
                    return
                await asyncio.sleep(max(due - loop.time(), 0.0))
                writer.write(data)
                await writer.drain()

        releasing = asyncio.create_task(release())
        try:
            while data := await reader.read(65536):
                held.put_nowait((loop.time() + delay, data))
            held.put_nowait((0.0, b""))
            await releasing
        except (OSError, asyncio.CancelledError):
            releasing.cancel()
        finally:
            writer.close()


# Sentinel.

SENTINEL_CONFIG = """\
sentinel monitor {service} 127.0.0.1 {port} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


class Sentinels:
    """Three Sentinels monitoring `primary` (quorum 2, down after 1 s without an answer)."""

    def __init__(self, work_dir: Path, primary: RedisServer) -> None:
        self.servers: list[RedisServer] = []
        for n in range(3):
            folder = work_dir / f"sentinel-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(SENTINEL_CONFIG.format(service=SERVICE, port=primary.port))
            self.servers.append(RedisServer(folder, args=["--sentinel"], config=config))

    @property
    def spec(self) -> str:
        """REDIS_SENTINELS for the app."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self, replicas: int) -> None:
        """Start all three; return once each knows the primary's `replicas` and its 2 peers."""
        for server in self.servers:
            server.start()
        deadline = time.monotonic() + LINK_SECONDS
        for server in self.servers:
            with sync_client(server.port) as client:
                while True:
                    known = client.sentinel_slaves(SERVICE)
                    peers = client.sentinel_sentinels(SERVICE)
                    if len(known) >= replicas and len(peers) >= 2:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"sentinel {server.port}: {known} {peers}")
                    time.sleep(0.1)  # polling interval while they discover each other

    def primary_port(self) -> int:
        with sync_client(self.servers[0].port) as client:
            _host, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def stopping(*servers: RedisServer) -> Iterator[None]:
    """Every server given is stopped on the way out, whatever happened."""
    try:
        yield
    finally:
        for server in servers:
            server.stop()
