"""A whole deployment in real processes, for the fault-injection tests (tests/e2e/test_faults.py).

- `RedisServer`: a private `redis-server` (no persistence) on a free port, which can be stopped
  and started again on the SAME port — it then comes back EMPTY, like a replaced Redis.
- `PostgresCluster`: a private PostgreSQL cluster (initdb as the `postgres` user, trust auth,
  fsync off) that can be stopped (`fast` or `immediate`) and started again on the same port.
- `Cluster`: one test's deployment on those servers: `serve --no-projector` API replicas
  (tests/harness/server.py's `start_server`), `project` workers (`python -m app project`, one
  log file each), the active projector found from the leader lease, kill -9 helpers, and the
  check every scenario ends with: the live read model equals a fresh rebuild of the store, key
  for key.
- `InProcessLoad` (bulk appends through the real command handlers, paced) and `MutationClient`
  (GraphQL mutations over HTTP, every outcome recorded with its X-Request-ID) produce load.

Every process is started in its own session and stopped by its own pid; `Cluster.close()`,
`RedisServer.stop()` and `PostgresCluster.destroy()` run from fixture finalizers, so a failing
test still leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store import migrate
from app.event_store.sqlalchemy import SqlAlchemyEventStore
from app.read_model.layout import Keys
from app.read_model.redis import ReadModel
from app.service.handlers import CommandHandlers
from tests.conftest import IN_CI
from tests.harness.projection_support import (
    CTX,
    command_handlers,
    delete_all,
    dump,
    new_employee,
    new_location,
    project_fully,
)
from tests.harness.server import (
    STOP_TIMEOUT_SECONDS,
    RunningServer,
    app_env,
    free_port,
    start_server,
)
from tests.harness.ws_support import ASSIGN, CHANGE_TITLE, CREATE_EMPLOYEE, CREATE_LOCATION

REDIS_SERVER = Path("/usr/bin/redis-server")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_SECONDS = 30.0


def require_binary(path: Path) -> Path:
    """`path`, or a skip (a failure under CI=true) when that binary is not installed."""
    if path.exists():
        return path
    if IN_CI:
        pytest.fail(f"{path} is missing: under CI=true every fault scenario must run")
    pytest.skip(f"{path} is not installed")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process we started in its own session (and anything it started), then reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _terminate(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, wait, SIGKILL if ignored; the exit code SIGTERM got (None if it had to kill)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return None


# Redis.


class RedisServer:
    """A private redis-server without persistence: a restart brings it back empty. `args` are
    added to its command line; `config` is a configuration file it starts from (a Sentinel's)."""

    def __init__(
        self, work_dir: Path, args: Sequence[str] = (), config: Path | None = None
    ) -> None:
        self.binary = require_binary(REDIS_SERVER)
        self.args = list(args)
        self.config = config
        self.dir = work_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start on `self.port` (the same one every time) and return once it answers PING."""
        assert not self.running, "redis-server is already running"
        self.starts += 1
        log = (self.dir / f"redis-{self.starts}.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [str(self.binary), *([str(self.config)] if self.config else []),
                 "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                 "--daemonize", "no", *self.args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not answer PING")
            time.sleep(0.02)  # polling interval while it starts

    def stop(self) -> None:
        """Shut it down (SIGTERM: nothing is saved, `--save ""`) and wait until it is gone."""
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def client(self) -> Redis:
        """A client that reconnects (with retries) after this server restarted."""
        return Redis.from_url(
            self.url, decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 5),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )


# PostgreSQL.


class PostgresCluster:
    """A private PostgreSQL cluster owned by the `postgres` user (root cannot run initdb).

    Its data, socket and log live in a fresh directory under /tmp (pytest's tmp folders are
    not reachable by that user). `stop()` and `start()` keep the port, so clients configured
    with `url()` reconnect to the same server once it is back.
    """

    def __init__(self) -> None:
        self.bin = require_binary(PG_BIN / "pg_ctl").parent
        require_binary(PG_BIN / "initdb")
        require_binary(Path(shutil.which("runuser") or "/usr/sbin/runuser"))
        self.root = Path(tempfile.mkdtemp(prefix="cqrs-faults-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.socket_dir.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        self.running = False

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], cwd=self.root, capture_output=True,
            text=True, check=check, timeout=60,
        )

    def init(self) -> None:
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended and open transactions rolled back; `immediate`: a crash."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                          "-t", "60", "stop")
        self.running = False

    def destroy(self) -> None:
        """Stop it whatever state it is in, and remove its directory."""
        if self.data.exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                              "-w", "stop", check=False)
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # pg_ctl failed: end the postmaster by its own pid
                with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> str:
        """A new empty database on this cluster; its SQLAlchemy URL."""
        engine = create_async_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.url(name)


# Application processes.


@dataclass
class Worker:
    """One `python -m app project` process."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9, and reap it."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def log_messages(text: str) -> list[str]:
    """The `message` of every JSON log line (other lines as they are)."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        out.append(str(record.get("message", line)) if isinstance(record, dict) else line)
    return out


def server_log(server: RunningServer) -> str:
    try:
        return server.log_path.read_text(errors="replace")
    except OSError:
        return ""


def lease_pid(value: str | None) -> int | None:
    """The pid in a lease value `{hostname}:{pid}:{random}`."""
    if not value:
        return None
    return int(value.rsplit(":", 2)[1])


@dataclass
class Cluster:
    """One test's deployment: a private Redis, a fresh PostgreSQL database, app processes."""

    work_dir: Path
    redis_server: RedisServer
    postgres: PostgresCluster
    database_url: str
    prefix: str
    redis: Redis
    store: SqlAlchemyEventStore
    settings: dict[str, str] = field(default_factory=dict)
    apis: list[RunningServer] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    _started: int = 0

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_PREFIX": self.prefix,
                "LOG_JSON": "true", **self.settings, **(extra or {})}

    # processes

    async def start_apis(
        self, count: int, projector: bool = False, extra_env: Mapping[str, str] | None = None
    ) -> list[RunningServer]:
        """`count` API replicas (`serve --no-projector` unless `projector`), started in parallel."""
        args = () if projector else ("--no-projector",)
        names = []
        for _ in range(count):
            self._started += 1
            names.append(self.work_dir / f"api-{self._started}")
        started = await asyncio.gather(
            *(asyncio.to_thread(start_server, name, self.redis_server.url, self.env(extra_env),
                                args) for name in names),
            return_exceptions=True,
        )
        for server in started:
            if isinstance(server, RunningServer):
                self.apis.append(server)
        for server in started:
            if isinstance(server, BaseException):
                raise server
        return [s for s in started if isinstance(s, RunningServer)]

    def start_worker(self, extra_env: Mapping[str, str] | None = None) -> Worker:
        """A `python -m app project` process (not waited for: it serves nothing)."""
        self._started += 1
        name = f"project-{self._started}"
        log_path = self.work_dir / f"{name}.log"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", "project"],
                cwd=self.work_dir,
                env=app_env(self.work_dir, self.redis_server.url, self.env(extra_env)),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        worker = Worker(name, process, log_path)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def worker(self, pid: int) -> Worker:
        for worker in self.workers:
            if worker.pid == pid:
                return worker
        raise AssertionError(f"pid {pid} holds the projector lease but is none of our workers")

    def run_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`python -m app …` against this deployment, to completion."""
        return subprocess.run(
            [sys.executable, "-m", "app", *args], cwd=self.work_dir,
            env=app_env(self.work_dir, self.redis_server.url, self.env()),
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def logs(self) -> str:
        """Every app process's log, each under a header (for failure messages)."""
        parts = [f"--- {w.name} (pid {w.pid}, rc {w.process.returncode})\n{w.log_tail()}"
                 for w in self.workers]
        parts += [f"--- {s.work_dir.name} (pid {s.process.pid})\n{s.log_tail(30)}"
                  for s in self.apis]
        return "\n".join(parts)

    def casualties(self) -> str:
        """Every app process that exited although nobody stopped it, with its log's end."""
        dead = [(w.name, w.process, w.log_tail(15)) for w in self.workers
                if w.process.poll() not in (None, -signal.SIGKILL)]
        dead += [(s.work_dir.name, s.process, s.log_tail(15)) for s in self.apis
                 if s.process.poll() is not None]
        return "\n".join(f"{name} (pid {process.pid}) exited with {process.returncode}:\n{tail}"
                         for name, process, tail in dead) or "no app process died"

    def log_lines_about(self, request_ids: Iterable[str], limit: int = 40) -> str:
        """The app processes' log lines carrying any of these correlation ids (tracebacks
        included: they are part of the JSON line)."""
        wanted = set(request_ids)
        texts = [w.log_text() for w in self.workers] + [server_log(s) for s in self.apis]
        found = []
        for text in texts:
            for line in text.splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(line).get("correlation_id") in wanted:
                        found.append(line)
        return "\n".join(found[:limit])

    def close(self) -> None:
        """Stop every app process this cluster started: SIGTERM to all at once, then wait for
        each (SIGKILL to its process group if it ignores SIGTERM for STOP_TIMEOUT_SECONDS)."""
        processes = [s.process for s in self.apis] + [w.process for w in self.workers]
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in processes:
            _terminate(process)
        self.apis.clear()

    # the read model, straight from Redis

    async def leader(self) -> str | None:
        value = await self.redis.get(self.keys.leader)
        return None if value is None else str(value)

    async def leader_pid(self) -> int | None:
        return lease_pid(await self.leader())

    async def generation(self) -> int | None:
        value = await self.redis.get(self.keys.generation_pointer)
        return int(value) if value is not None else None

    async def checkpoint(self) -> int:
        """The checkpoint of the generation queries read (0 without one)."""
        generation = await self.generation()
        if generation is None:
            return 0
        return int(await self.redis.get(self.keys.at(generation).checkpoint) or 0)

    async def wait_caught_up(self, seconds: float = 30.0) -> int:
        """Until the active generation's checkpoint is the store's head and no rebuild runs."""
        head = await self.store.head_position()
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(RedisError, OSError):
                if (await self.checkpoint() == head
                        and not await self.redis.exists(self.keys.rebuilding)):
                    return head
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the read model did not reach the store's head {head} within {seconds}s "
                    f"(checkpoint {await self.checkpoint()}, generation "
                    f"{await self.generation()}):\n{self.logs()}"
                )
            await asyncio.sleep(0.05)  # polling interval

    async def assert_equals_fresh_rebuild(self, seconds: float = 30.0) -> dict[str, Any]:
        """Caught up, the live generation equals a fresh projection of the whole store.

        Returns the live dump (keys without the generation prefix).
        """
        head = await self.wait_caught_up(seconds)
        generation = await self.generation()
        assert generation is not None
        live = await dump(self.redis, self.keys.at(generation))
        assert await self.generation() == generation, "the generation changed while reading it"
        reference = Keys(f"{self.prefix}-reference-{uuid.uuid4().hex[:8]}")
        try:
            await project_fully(self.store, self.redis, reference)
            expected = await dump(self.redis, reference)
        finally:
            await delete_all(self.redis, reference)
        assert live.get("checkpoint") == ("string", head)
        assert expected.get("checkpoint") == ("string", head)
        if live != expected:
            missing = sorted(set(expected) - set(live))
            extra = sorted(set(live) - set(expected))
            differing = sorted(k for k in set(live) & set(expected) if live[k] != expected[k])
            sample = [(k, live[k], expected[k]) for k in differing[:3]]
            raise AssertionError(
                f"generation {generation} differs from a fresh rebuild of {head} events: "
                f"{len(missing)} keys missing {missing[:10]}, {len(extra)} extra {extra[:10]}, "
                f"{len(differing)} differing, e.g. {sample}"
            )
        return live

    async def store_events(self) -> list[dict[str, Any]]:
        """Every stored event row (position, stream, version, type, data, correlation id)."""
        from app.event_store.tables import events

        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(events).order_by(events.c.position))).all()
        return [
            {"position": r.position, "stream_id": r.stream_id, "version": r.version,
             "type": r.type, "data": dict(r.data),
             "correlation_id": dict(r.metadata).get("correlation_id"),
             "commit_position": r.commit_position}
            for r in rows
        ]

    async def stream_versions(self) -> dict[str, int]:
        from app.event_store.tables import streams

        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(sa.select(streams.c.stream_id, streams.c.version))).all()
        return {r.stream_id: r.version for r in rows}


@contextlib.asynccontextmanager
async def open_cluster(
    work_dir: Path, postgres: PostgresCluster, settings: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """A private Redis, a fresh database (tables created), clients to both; all closed after."""
    redis_server = RedisServer(work_dir / "redis")
    redis_server.start()
    redis: Redis | None = None
    store: SqlAlchemyEventStore | None = None
    cluster: Cluster | None = None
    try:
        name = f"faults_{uuid.uuid4().hex[:12]}"
        url = await postgres.create_database(name)
        # Migrated before any app process starts, as an operator does (`python -m app migrate`).
        await migrate(url)
        store = await SqlAlchemyEventStore.open(url, default_schema())
        redis = redis_server.client()
        cluster = Cluster(work_dir, redis_server, postgres, url, f"faults-{name[7:]}", redis,
                          store, dict(settings or {}))
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
        redis_server.stop()


# Load: in-process bulk appends.


class Announcer:
    """What `serve` does after appends, for appends made in the test process: record the head
    and wake `project` workers (one notice per burst)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._read_model = ReadModel(redis, keys)
        self._redis = redis
        self._keys = keys
        self._head = 0
        self._announced = 0
        self._task: asyncio.Task[None] | None = None

    def appended(self, position: int) -> None:
        self._head = max(self._head, position)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._announce())

    async def _announce(self) -> None:
        while self._head > self._announced:
            position = self._head
            with contextlib.suppress(RedisError, OSError):  # best effort, like the app
                await self._read_model.note_head(position)
                await self._redis.publish(self._keys.appended_channel, position)
            self._announced = position

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class InProcessLoad:
    """Random hires, moves, title changes and terminations through the real command handlers,
    appended to the cluster's store from the test process: `writers` coroutines, each on its
    own employees (so no command is refused), paced to `rate` events per second."""

    def __init__(self, cluster: Cluster, seed: int, writers: int = 4, rate: float = 0.0) -> None:
        self.handlers: CommandHandlers = command_handlers(cluster.store)
        self.announcer = Announcer(cluster.redis, cluster.keys)
        cluster.store.on_append(self.announcer.appended)
        self.rng = random.Random(seed)
        self.writers = writers
        self.rate = rate
        self.locations: list[int] = []
        self.position = 0
        self.commands = 0

    async def open_locations(self, count: int = 4) -> None:
        for n in range(count):
            made = await self.handlers.create_location(new_location(n), CTX)
            self.locations.append(made.entity_id)
            self.position = max(self.position, made.position)

    async def run(self, until: Callable[[], bool], deadline: float = 120.0) -> int:
        """Write until `until()` (checked after every command); the head position reached."""
        if not self.locations:
            await self.open_locations()
        started = time.monotonic()
        await asyncio.gather(*(self._writer(n, until, started, deadline)
                               for n in range(self.writers)))
        await self.announcer.close()
        return self.position

    async def _writer(self, n: int, until: Callable[[], bool], started: float,
                      deadline: float) -> None:
        rng = random.Random(self.rng.random())
        staff: dict[int, int] = {}
        while not until():
            assert time.monotonic() - started < deadline, "the load did not finish in time"
            if self.rate > 0:
                ahead = self.position - self.rate * (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(min(ahead / self.rate, 0.2))
                    continue
            roll = rng.random()  # mostly two-event commands: hires and moves
            if not staff or roll < 0.45:
                at = rng.choice(self.locations)
                made = await self.handlers.create_employee(new_employee(n, at), CTX)
                staff[made.entity_id] = at
            elif roll < 0.85:
                who = rng.choice(sorted(staff))
                to = rng.choice([loc for loc in self.locations if loc != staff[who]])
                made = await self.handlers.assign_employee_to_location(
                    c.AssignEmployeeToLocation(who, to), CTX)
                staff[who] = to
            elif roll < 0.93:
                who = rng.choice(sorted(staff))
                made = await self.handlers.change_employee_job_title(
                    c.ChangeEmployeeJobTitle(who, f"Title {rng.randrange(1000)}"), CTX)
            else:
                who = rng.choice(sorted(staff))
                made = await self.handlers.terminate_employee(c.TerminateEmployee(who), CTX)
                del staff[who]
            self.commands += 1
            self.position = max(self.position, made.position)


# Load: GraphQL mutations over HTTP.

EVENTS_PER_MUTATION = {"createLocation": 1, "createEmployee": 2,
                       "assignEmployeeToLocation": 2, "changeEmployeeJobTitle": 1}
MUTATIONS = {"createLocation": CREATE_LOCATION, "createEmployee": CREATE_EMPLOYEE,
             "assignEmployeeToLocation": ASSIGN, "changeEmployeeJobTitle": CHANGE_TITLE}


@dataclass
class Outcome:
    """One mutation sent over HTTP: what came back."""

    request_id: str
    mutation: str  # the Mutation field, e.g. assignEmployeeToLocation
    input: dict[str, Any]
    started: float
    ended: float = 0.0
    status: int | None = None  # HTTP status; None: no response (transport error)
    payload: dict[str, Any] | None = None  # the field's value when it has a position
    refusal: str | None = None  # the union error member's code (ConflictError, …)
    error_codes: list[str] = field(default_factory=list)  # GraphQL errors' extensions.code
    transport_error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.payload is not None

    @property
    def position(self) -> int:
        assert self.payload is not None
        return int(self.payload["position"])


class MutationClient:
    """Sends mutations to one API process and records every outcome (never raises for one)."""

    def __init__(self, base_url: str, outcomes: list[Outcome], timeout: float = 30.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.outcomes = outcomes

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, field_name: str, **inputs: Any) -> Outcome:
        outcome = Outcome(f"fault-{uuid.uuid4().hex}", field_name, inputs, time.monotonic())
        self.outcomes.append(outcome)
        try:
            response = await self.http.post(
                "/graphql", json={"query": MUTATIONS[field_name], "variables": {"input": inputs}},
                headers={"X-Request-ID": outcome.request_id},
            )
        except httpx.TransportError as error:
            outcome.transport_error = repr(error)
            outcome.ended = time.monotonic()
            return outcome
        outcome.ended = time.monotonic()
        outcome.status = response.status_code
        if response.status_code != 200:
            return outcome
        body = response.json()
        errors = body.get("errors") or []
        outcome.error_codes = [str((e.get("extensions") or {}).get("code")) for e in errors]
        value = (body.get("data") or {}).get(field_name)
        if value is not None and "position" in value:
            outcome.payload = value
        elif value is not None:
            outcome.refusal = value.get("code") or value.get("__typename")
        return outcome

    async def create_location(self, location_id: int) -> Outcome:
        return await self.send("createLocation", id=location_id,
                               streetAddress=f"{location_id} Main Street", city="Springfield",
                               state="IL", postalCode="62701")

    async def create_employee(self, employee_id: int, location_id: int) -> Outcome:
        return await self.send("createEmployee", id=employee_id, firstName="Ana",
                               lastName="Smith", dateOfBirth="1990-05-17", jobTitle="Cook",
                               locationId=location_id)

    async def move(self, employee_id: int, location_id: int) -> Outcome:
        return await self.send("assignEmployeeToLocation", employeeId=employee_id,
                               locationId=location_id)

    async def retitle(self, employee_id: int, title: str) -> Outcome:
        return await self.send("changeEmployeeJobTitle", employeeId=employee_id, jobTitle=title)


async def graphql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """The whole response body of a GraphQL request (HTTP 200 asserted)."""
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:500]}"
    body: dict[str, Any] = response.json()
    return body


def error_codes(body: Mapping[str, Any]) -> list[str]:
    return [str((e.get("extensions") or {}).get("code")) for e in body.get("errors") or []]


def timeline(outcomes: Iterable[Outcome], origin: float) -> str:
    """One line per mutation: start..end relative to `origin` (seconds), field, result."""
    lines = []
    for o in outcomes:
        result: Any = f"ok@{o.position}" if o.succeeded else (
            o.error_codes or o.refusal or o.transport_error or f"HTTP {o.status}")
        end = f"{o.ended - origin:+.2f}" if o.ended else "pending"
        lines.append(f"{o.started - origin:+.2f}..{end} {o.mutation} {result}")
    return "\n".join(lines)


def check_mutations_against_store(
    outcomes: Iterable[Outcome], stored: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    """Every mutation that answered a payload has all its events in the store (ending at its
    position); every one that did not has none; nothing else was written by these clients.

    Returns how many succeeded / failed.
    """
    by_request: dict[str, list[Mapping[str, Any]]] = {}
    for event in stored:
        by_request.setdefault(str(event["correlation_id"]), []).append(event)
    counts = {"succeeded": 0, "failed": 0}
    problems = []
    for outcome in outcomes:
        mine = by_request.pop(outcome.request_id, [])
        if outcome.succeeded:
            counts["succeeded"] += 1
            wanted = EVENTS_PER_MUTATION[outcome.mutation]
            if len(mine) != wanted or mine[-1]["position"] != outcome.position:
                problems.append(f"{outcome.mutation} {outcome.request_id} answered position "
                                f"{outcome.position} but the store holds {mine}")
        else:
            counts["failed"] += 1
            if mine:
                problems.append(f"{outcome.mutation} {outcome.request_id} failed "
                                f"({outcome.error_codes or outcome.refusal or outcome.status}) "
                                f"but the store holds {len(mine)} of its events: {mine}")
    stray = {rid: len(events) for rid, events in by_request.items() if rid.startswith("fault-")}
    if stray:
        problems.append(f"events of requests never sent: {stray}")
    assert not problems, "\n".join(problems[:10])
    return counts


async def wait_ready(base_url: str, seconds: float = 30.0) -> None:
    """Until /readyz answers 200 (the event store and Redis reachable)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{base_url}/readyz not 200 within {seconds}s")
            await asyncio.sleep(0.05)  # polling interval



async def until(
    check: Callable[[], Any], what: str, seconds: float, interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll `check` (a function or coroutine function) until it returns something truthy,
    which is returned; fail after `seconds` with `what` (and `context()`, for example the
    processes' logs)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"{what} did not happen within {seconds}s{detail}")
        await asyncio.sleep(interval)  # polling interval, not an assertion
