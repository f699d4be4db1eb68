"""`python -m bench.soak`: a long mixed load through two API replicas; memory must stay flat.

    python -m bench.soak [--minutes 10] [--postgres-url URL] [--redis-url URL] [--clients N]
                         [--subscribers N] [--sample-seconds S] [--csv PATH]
                         [--feeds events,…] [--no-churn] [--app-env NAME=VALUE …]

Starts the service the way it runs at scale — two `python -m app serve --no-projector` replicas
and one `python -m app project` worker on PostgreSQL and Redis (the event-store tables dropped
first, a fresh REDIS_PREFIX per run) — and drives it for --minutes with:

- N HTTP clients (httpx), each request to either replica at random: hires (a few invalid on
  purpose), moves, job-title changes, terminations (holding the staff near --employees), a few
  new locations; and queries: a location with its employees, pages of employees (following the
  cursor), an employee by id — right after each hire on the *other* replica with `minPosition` —,
  time travel (`atPosition`, `asOf`), the event log and the projection status;
- websocket subscribers that stay connected, half on each replica, over both protocols
  (`events(after:)`, which must arrive gapless, `locationChanged`, `employeeChanged`), counting
  deliveries; and on each replica one connect / subscribe / close cycle after another (churn).

Every S seconds it samples each process's RSS (/proc/PID/status VmRSS), threads and open file
descriptors, and the counters. At the end it prints, per process, the RSS after the warm-up (30 s
or 10 % of the run, whichever is shorter), at the end, the max and the growth, its exit status
and how many lines it logged (at WARNING and above); then the rates, counts, latencies per
operation, the RSS curve and the verdicts. --csv writes every sample. --feeds, --no-churn and
--app-env narrow a leak down (which subscription, churn or not, which setting).

Exit status 1 on any error — a non-200 response, a GraphQL `errors` entry, a transport failure, a
failed check (a gap in a feed, a hire not visible on the other replica, a subscriber the server
did not free) —, on memory that is not flat (a process ending more than 10 % *and* more than
10 MiB above its post-warm-up RSS), or on a process that died or did not exit cleanly on SIGTERM.
Expected domain outcomes (union members such as NOT_FOUND for an employee another client has
just terminated, or VALIDATION_FAILED for the deliberately invalid hires) are counted, not errors.
Every process is stopped with SIGTERM on the way out, also on Ctrl-C or SIGTERM (exit status
130, with the table so far) or a failure; 2 if PostgreSQL or Redis does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from bench.common import DEFAULT_POSTGRES, DEFAULT_REDIS, drop_prefix, progress, unique_prefix
from bench.server import free_port
from tests.harness.environment import app_environment

# its own database: `python -m bench` and tests/e2e/test_bench.py empty DEFAULT_POSTGRES's tables
SOAK_POSTGRES = DEFAULT_POSTGRES.rsplit("/", 1)[0] + "/cqrs_soak_run"

START_SECONDS = 60.0
STOP_SECONDS = 20.0
HTTP_TIMEOUT_SECONDS = 40.0  # above the server's own REQUEST_TIMEOUT_SECONDS (30): it answers 503
TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
MAX_EXAMPLES = 20

# --- GraphQL documents --------------------------------------------------------------------------

CREATE_LOCATION = """mutation CreateLocation($input: CreateLocationInput!) {
  createLocation(input: $input) { __typename ... on Error { code message }
    ... on LocationPayload { position location { id } } } }"""
CREATE_EMPLOYEE = """mutation Hire($input: CreateEmployeeInput!) {
  createEmployee(input: $input) { __typename ... on Error { code message }
    ... on EmployeePayload { position employee { id locationId version } } } }"""
MOVE = """mutation Move($input: AssignEmployeeToLocationInput!) {
  assignEmployeeToLocation(input: $input) { __typename ... on Error { code message }
    ... on EmployeePayload { position employee { id locationId version } } } }"""
RETITLE = """mutation Retitle($input: ChangeEmployeeJobTitleInput!) {
  changeEmployeeJobTitle(input: $input) { __typename ... on Error { code message }
    ... on EmployeePayload { position employee { id jobTitle version } } } }"""
TERMINATE = """mutation Terminate($input: TerminateEmployeeInput!) {
  terminateEmployee(input: $input) { __typename ... on Error { code message }
    ... on TerminatePayload { employeeId position } } }"""
LOCATION = """query Location($id: Int!) {
  location(id: $id) { id city employeeCount version
    employees { id firstName jobTitle location { id } } } }"""
EMPLOYEES_PAGE = """query Page($locationId: Int, $after: String) {
  employees(locationId: $locationId, first: 20, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id lastName jobTitle } } } }"""
EMPLOYEE = """query Employee($id: Int!, $minPosition: Int) {
  employee(id: $id, minPosition: $minPosition) { id firstName jobTitle locationId version
    location { id city } } }"""
AT_POSITION = """query AtPosition($p: Int!, $location: Int!, $employee: Int!) {
  location(id: $location, atPosition: $p) { id employeeCount employees { id jobTitle } }
  employee(id: $employee, atPosition: $p) { id locationId jobTitle location { id } }
  employees(first: 20, atPosition: $p) { totalCount edges { node { id locationId } } } }"""
AS_OF = """query AsOf($t: DateTime!) {
  locations(asOf: $t) { id employeeCount } }"""
EVENTS = """query Events($after: Int!) {
  events(after: $after, first: 20) { position streamId type data correlationId } }"""
STATUS = "query Status { projectionStatus { position headPosition lag } }"

EVENTS_FEED = "subscription Feed($after: Int) { events(after: $after) { position type } }"
LOCATION_FEED = ("subscription Locations { locationChanged { position kind locationId "
                 "location { id employeeCount } } }")
EMPLOYEE_FEED = ("subscription Staff($locationId: Int) { employeeChanged(locationId: $locationId) "
                 "{ position kind employeeId employee { id locationId jobTitle } } }")

# name → (name, query, watches one location, gapless)
FEEDS = {
    "events": ("events", EVENTS_FEED, False, True),
    "locationChanged": ("locationChanged", LOCATION_FEED, False, False),
    "employeeChanged": ("employeeChanged", EMPLOYEE_FEED, False, False),
    "employeeChanged(locationId)": ("employeeChanged(locationId)", EMPLOYEE_FEED, True, False),
}

FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "June")
LAST_NAMES = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kim", "Berg")
TITLES = ("Line Cook", "Server", "Host", "Dishwasher", "Shift Manager", "Bartender", "Chef")
CITIES = (("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Denver", "CO"),
          ("Madison", "WI"), ("Raleigh", "NC"), ("Boise", "ID"), ("Tucson", "AZ"))


# --- the processes ------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    exit_code: int | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def status(self) -> tuple[int | None, int | None, int | None]:
        """Resident memory now (VmRSS, KiB), threads and open file descriptors; Nones once the
        process is gone (a zombie has no VmRSS)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            fds: int | None = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None, None, None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" not in fields:
            return None, None, None
        return int(fields["VmRSS"].split()[0]), int(fields["Threads"]), fds

    def log_lines(self) -> int:
        try:
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if line)
        except OSError:
            return 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


def app_env(database_url: str, redis_url: str, prefix: str, work: Path) -> dict[str, str]:
    """The environment of every app process (started in `work`): the run's settings, none of
    ours (tests/harness/environment.py)."""
    return app_environment(work, {
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix,
        "VAR_DIR": str(work / "var"), "LOG_LEVEL": "WARNING", "LOG_JSON": "true",
    })


def spawn(name: str, args: Sequence[str], work: Path, env: dict[str, str],
          port: int | None = None) -> Process:
    log = work / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "app", *args], cwd=work, env=env, stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C aimed at the soak does not hit them first
        )
    return Process(name, popen, log, port)


def wait_ready(process: Process) -> None:
    """Until /healthz and /readyz answer 200 (or the process exits, or START_SECONDS pass)."""
    deadline = time.monotonic() + START_SECONDS
    pending = ["/healthz", "/readyz"]
    with httpx.Client(base_url=f"http://127.0.0.1:{process.port}", timeout=2.0) as client:
        while pending:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode} "
                                   f"during start-up:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} not ready within {START_SECONDS:.0f} s:\n"
                                   f"{process.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(pending[0]).status_code == 200:
                    pending.pop(0)
                    continue
            time.sleep(0.1)


def start_cluster(work: Path, env: dict[str, str], processes: list[Process]) -> None:
    """Two API replicas and the projector; each is appended to `processes` as soon as it runs.

    The first replica creates the tables alone (concurrent CREATE TABLEs race in PostgreSQL).
    """
    first = spawn("replica-1", _serve_args(port := free_port()), work, env, port)
    processes.append(first)
    wait_ready(first)
    second = spawn("replica-2", _serve_args(port := free_port()), work, env, port)
    processes.append(second)
    processes.append(spawn("projector", ["project"], work, env))
    wait_ready(second)


def _serve_args(port: int) -> list[str]:
    return ["serve", "--no-projector", "--host", "127.0.0.1", "--port", str(port)]


def stop_all(processes: list[Process]) -> None:
    """SIGTERM to every process at once, then wait for each (SIGKILL after STOP_SECONDS)."""
    for process in processes:
        if process.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: it and its children
            process.popen.wait(STOP_SECONDS)
        process.exit_code = process.popen.returncode


# --- the services -------------------------------------------------------------------------------


async def prepare_postgres(url: str) -> None:
    """Create the database if missing, drop the event store's tables and migrate it afresh, so
    every run starts from an empty store."""
    import asyncpg  # type: ignore[import-untyped]
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.event_store import migrate
    from app.event_store.tables import metadata

    plain = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    base, _, name = plain.partition("?")[0].rpartition("/")
    problem: BaseException | None = None
    for maintenance in ("postgres", "test", "template1"):
        try:
            conn = await asyncpg.connect(f"{base}/{maintenance}", timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            problem = error
            continue
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        break
    else:
        raise RuntimeError(f"PostgreSQL at {base} does not answer: {problem}")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            # whatever else an earlier version of the app left in this database's event store
            await conn.execute(sa.text("DROP TABLE IF EXISTS events, streams, idempotency_keys, "
                                       "snapshots, alembic_version CASCADE"))
    finally:
        await engine.dispose()
    await migrate(url)


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except (redis.RedisError, OSError) as error:
        raise RuntimeError(f"Redis at {url} does not answer: {error}") from error


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Sample:
    elapsed: float
    rss_kib: dict[str, int | None]
    threads: dict[str, int | None]
    fds: dict[str, int | None]
    requests: int
    errors: int
    domain: int
    deliveries: int
    subscribers: int


@dataclass
class Feed:
    """One long-lived websocket subscriber."""

    name: str
    replica: int
    protocol: str
    query: str
    variables: dict[str, Any]
    gapless: bool  # `events`: every position exactly once, in order
    last: int = 0
    deliveries: int = 0
    reconnects: int = 0
    connected: bool = False


@dataclass
class Soak:
    args: argparse.Namespace
    processes: list[Process]
    warmup: float
    requests: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # op → seconds
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    domain: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0
    churned: int = 0
    samples: list[Sample] = field(default_factory=list)
    feeds: list[Feed] = field(default_factory=list)
    locations: list[int] = field(default_factory=list)
    employees: dict[int, int] = field(default_factory=dict)  # live employee id → location id
    head: int = 0
    lag_at_end: int | None = None
    started: float = 0.0
    load_seconds: float = 0.0
    stopping: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.replicas = [p for p in self.processes if p.port is not None]
        self.stop = asyncio.Event()
        self.clients: list[httpx.AsyncClient] = []

    # ---- bookkeeping

    def error(self, kind: str, op: str, detail: str) -> None:
        self.errors += 1
        self.error_kinds[f"{kind} {op}"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            when = (f"{time.monotonic() - self.started:7.1f} s" if self.started
                    else "seeding")
            self.examples.append(f"[{when}] {kind} {op}: {detail[:400]}")

    def sample(self) -> None:
        now = {p.name: p.status() for p in self.processes}
        self.samples.append(Sample(
            elapsed=time.monotonic() - self.started,
            rss_kib={name: rss for name, (rss, _, _) in now.items()},
            threads={name: threads for name, (_, threads, _) in now.items()},
            fds={name: fds for name, (_, _, fds) in now.items()},
            requests=self.requests, errors=self.errors, domain=sum(self.domain.values()),
            deliveries=self.deliveries, subscribers=sum(f.connected for f in self.feeds),
        ))

    # ---- HTTP

    async def call(self, op: str, query: str, variables: dict[str, Any],
                   replica: int | None = None) -> dict[str, Any] | None:
        """The `data` of one GraphQL request, or None after counting the failure as an error."""
        if replica is None:
            replica = self.rng.randrange(len(self.clients))
        self.requests += 1
        self.ops[op] += 1
        started = time.perf_counter()
        try:
            response = await self.clients[replica].post(
                "/graphql", json={"query": query, "variables": variables})
            self.latencies.setdefault(op, []).append(time.perf_counter() - started)
        except httpx.HTTPError as error:
            self.error("transport", op, f"replica-{replica + 1}: {type(error).__name__}: {error}")
            return None
        if response.status_code != 200:
            self.error(f"HTTP {response.status_code}", op, response.text)
            return None
        try:
            body = response.json()
        except ValueError:
            self.error("invalid JSON", op, response.text)
            return None
        if body.get("errors"):
            codes = {(e.get("extensions") or {}).get("code", "?") for e in body["errors"]}
            self.error(f"GraphQL {'/'.join(sorted(map(str, codes)))}", op,
                       json.dumps(body["errors"])[:400])
            return None
        data: dict[str, Any] = body["data"]
        return data

    async def mutate(self, op: str, name: str, query: str, data: dict[str, Any],
                     replica: int | None = None) -> dict[str, Any] | None:
        """The payload of a mutation, or None for a domain outcome (counted) or a failure."""
        answer = await self.call(op, query, {"input": data}, replica)
        if answer is None:
            return None
        result: dict[str, Any] = answer[name]
        if "code" in result:
            self.domain[result["code"]] += 1
            return None
        self.head = max(self.head, result["position"])
        return result

    # ---- the operations

    async def create_location(self) -> None:
        n = len(self.locations)
        city, state = CITIES[n % len(CITIES)]
        made = await self.mutate("createLocation", "createLocation", CREATE_LOCATION, {
            "streetAddress": f"{100 + n} Main Street", "city": city, "state": state,
            "postalCode": f"{10000 + n * 7}"})
        if made is not None:
            self.locations.append(made["location"]["id"])

    async def hire(self) -> None:
        rng = self.rng
        location = rng.choice(self.locations)
        invalid = rng.random() < 0.02  # under 16: VALIDATION_FAILED, on purpose
        born = (dt.date.today() - dt.timedelta(days=365 * 10) if invalid
                else dt.date(rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28)))
        replica = rng.randrange(len(self.clients))
        made = await self.mutate("createEmployee", "createEmployee", CREATE_EMPLOYEE, {
            "firstName": rng.choice(FIRST_NAMES), "lastName": rng.choice(LAST_NAMES),
            "dateOfBirth": born.isoformat(), "jobTitle": rng.choice(TITLES),
            "locationId": location}, replica)
        if made is None:
            return
        employee = made["employee"]
        if employee["locationId"] != location:
            self.error("check", "createEmployee", f"hired at {location}, payload says {employee}")
        # Read your write on the other replica (nobody else knows this id yet to terminate it).
        seen = await self.call("employee", EMPLOYEE,
                               {"id": employee["id"], "minPosition": made["position"]},
                               (replica + 1) % len(self.clients))
        if seen is not None and (seen["employee"] or {}).get("locationId") != location:
            self.error("check", "employee", f"employee {employee['id']} hired at "
                       f"{made['position']}: the other replica answers {seen['employee']}")
        self.employees[employee["id"]] = location

    def _someone(self) -> int | None:
        return self.rng.choice(tuple(self.employees)) if self.employees else None

    async def move(self) -> None:
        who = self._someone()
        if who is None:
            return
        here = self.employees[who]
        # now and then to where they already are: EMPLOYEE_ALREADY_AT_LOCATION, on purpose
        there = here if self.rng.random() < 0.05 else self.rng.choice(self.locations)
        moved = await self.mutate("assignEmployeeToLocation", "assignEmployeeToLocation", MOVE,
                                  {"employeeId": who, "locationId": there})
        if moved is not None and who in self.employees:
            self.employees[who] = moved["employee"]["locationId"]

    async def retitle(self) -> None:
        who = self._someone()
        if who is None:
            return
        title = "" if self.rng.random() < 0.02 else self.rng.choice(TITLES)  # "": on purpose
        await self.mutate("changeEmployeeJobTitle", "changeEmployeeJobTitle", RETITLE,
                          {"employeeId": who, "jobTitle": title})

    async def terminate(self) -> None:
        who = self._someone()
        if who is None:
            return
        self.employees.pop(who, None)
        await self.mutate("terminateEmployee", "terminateEmployee", TERMINATE,
                          {"employeeId": who})

    async def query_location(self) -> None:
        await self.call("location", LOCATION, {"id": self.rng.choice(self.locations)})

    async def query_page(self) -> None:
        location = self.rng.choice([None, *self.locations])
        page = await self.call("employees", EMPLOYEES_PAGE, {"locationId": location})
        if page is not None and page["employees"]["pageInfo"]["hasNextPage"]:
            await self.call("employees", EMPLOYEES_PAGE, {
                "locationId": location, "after": page["employees"]["pageInfo"]["endCursor"]})

    async def query_employee(self) -> None:
        who = self._someone()
        if who is not None:
            await self.call("employee", EMPLOYEE, {"id": who})

    async def query_at_position(self) -> None:
        who = self._someone() or 1
        await self.call("atPosition", AT_POSITION, {
            "p": self.rng.randint(1, max(self.head, 1)),
            "location": self.rng.choice(self.locations), "employee": who})

    async def query_as_of(self) -> None:
        back = self.rng.uniform(0, max(time.monotonic() - self.started, 1.0) + 5)
        when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=back)
        await self.call("asOf", AS_OF, {"t": when.isoformat()})

    async def query_events(self) -> None:
        await self.call("events", EVENTS, {"after": self.rng.randint(0, max(self.head - 20, 0))})

    async def query_status(self) -> None:
        await self.call("projectionStatus", STATUS, {})

    def pick(self) -> Callable[[], Awaitable[None]]:
        staff = len(self.employees) / max(self.args.employees, 1)
        weights: list[tuple[Callable[[], Awaitable[None]], float]] = [
            (self.hire, 10), (self.terminate, 10 * staff * staff),  # staff stays near the target
            (self.move, 12), (self.retitle, 12),
            (self.create_location, 0.5 if len(self.locations) < 2 * self.args.locations else 0),
            (self.query_location, 12), (self.query_page, 10), (self.query_employee, 10),
            (self.query_at_position, 10), (self.query_as_of, 3), (self.query_events, 3),
            (self.query_status, 1),
        ]
        return self.rng.choices([w[0] for w in weights], [w[1] for w in weights])[0]

    async def client(self) -> None:
        while not self.stop.is_set():
            operation = self.pick()
            try:
                await operation()
            except Exception as error:  # an answer of a shape the soak did not expect
                self.error("unexpected", operation.__name__, f"{type(error).__name__}: {error}")

    # ---- websockets

    async def _open(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if message.get("type") == "connection_ack":
                return
            if message.get("type") not in ("ka", "ping"):
                raise RuntimeError(f"no connection_ack: {message}")

    def _ws_url(self, replica: int) -> str:
        return f"ws://127.0.0.1:{self.replicas[replica].port}/graphql"

    async def follow(self, feed: Feed) -> None:
        """Stay subscribed; count deliveries; reconnect (an error) if the server ends it."""
        while not self.stopping:
            try:
                async with connect(self._ws_url(feed.replica), open_timeout=15,
                                   subprotocols=[Subprotocol(feed.protocol)]) as ws:
                    await self._open(ws)
                    variables = dict(feed.variables)
                    if feed.gapless:
                        variables["after"] = feed.last  # resumes exactly after a reconnect
                    start = "subscribe" if feed.protocol == TRANSPORT_WS else "start"
                    await ws.send(json.dumps({"id": "1", "type": start, "payload": {
                        "query": feed.query, "variables": variables}}))
                    feed.connected = True
                    async for raw in ws:
                        message = json.loads(raw)
                        kind = message.get("type")
                        if kind in ("next", "data"):
                            try:
                                self._deliver(feed, message.get("payload") or {})
                            except (KeyError, TypeError, ValueError) as error:
                                self.error("unexpected", feed.name, f"{error!r} in {message}")
                        elif kind == "ping":
                            await ws.send(json.dumps({"type": "pong"}))
                        elif kind in ("error", "complete", "connection_error"):
                            self.error("subscription", feed.name, json.dumps(message)[:400])
                            break
                    else:
                        self.error("subscription", feed.name, "the server closed the socket")
            except (OSError, WebSocketException, TimeoutError, RuntimeError, ValueError) as error:
                if self.stopping:
                    return
                self.error("subscription", feed.name, f"{type(error).__name__}: {error}")
            finally:
                feed.connected = False
            if not self.stopping:
                feed.reconnects += 1
                await asyncio.sleep(1)

    def _deliver(self, feed: Feed, payload: dict[str, Any]) -> None:
        if payload.get("errors"):
            self.error("subscription", feed.name, json.dumps(payload["errors"])[:400])
            return
        item = next(iter((payload.get("data") or {}).values()), None)
        if not isinstance(item, dict):
            self.error("subscription", feed.name, f"no item in {payload}")
            return
        self.deliveries += 1
        feed.deliveries += 1
        position = int(item["position"])
        if position < feed.last or (feed.gapless and position != feed.last + 1):
            self.error("check", feed.name, f"position {position} after {feed.last}")
        feed.last = max(feed.last, position)

    async def churn(self, replica: int) -> None:
        """Connect, subscribe, maybe receive something, leave (politely or not); again."""
        while not self.stopping:
            try:
                async with connect(self._ws_url(replica), open_timeout=15,
                                   subprotocols=[Subprotocol(TRANSPORT_WS)]) as ws:
                    await self._open(ws)
                    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                        "query": EMPLOYEE_FEED,
                        "variables": {"locationId": self.rng.choice(self.locations)}}}))
                    with contextlib.suppress(TimeoutError):
                        message = json.loads(
                            await asyncio.wait_for(ws.recv(), self.rng.uniform(0.05, 0.5)))
                        if message.get("type") in ("error", "complete"):
                            self.error("subscription", "churn", json.dumps(message)[:400])
                    if self.rng.random() < 0.5:
                        await ws.send(json.dumps({"id": "1", "type": "complete"}))
                self.churned += 1
            except (OSError, WebSocketException, RuntimeError, ValueError) as error:
                if self.stopping:
                    return
                self.error("subscription", "churn", f"{type(error).__name__}: {error}")
                await asyncio.sleep(1)
            await asyncio.sleep(0.1)

    async def subscribers_on(self, replica: int) -> float | None:
        """The `cqrs_subscribers` gauge of one replica."""
        try:
            response = await self.clients[replica].get("/metrics")
        except httpx.HTTPError:
            return None
        found = re.findall(r"^cqrs_subscribers(?:\{[^}]*\})? (\S+)$", response.text, re.M)
        return sum(float(value) for value in found) if found else None

    # ---- the run

    async def sampler(self) -> None:
        duration = self.load_seconds
        step = self.args.sample_seconds
        times = sorted({round(k * step, 3) for k in range(int(duration / step) + 1)
                        if k * step < duration} | {self.warmup, duration})
        for at in times:
            await asyncio.sleep(max(0.0, self.started + at - time.monotonic()))
            self.sample()
            last = self.samples[-1]
            rss = "  ".join(f"{name} {_mib(kib)}" for name, kib in last.rss_kib.items())
            progress(f"{last.elapsed:6.0f} s  {rss}  requests {last.requests:,}  "
                     f"errors {last.errors}  deliveries {last.deliveries:,}")
            dead = [p for p in self.processes if p.popen.poll() is not None]
            if dead:
                for process in dead:
                    self.error("process", process.name, f"exited with {process.popen.returncode}"
                               f" during the run:\n{process.log_tail()}")
                break
        self.stop.set()

    async def seed(self) -> None:
        for _ in range(self.args.locations):
            await self.create_location()
        if not self.locations:
            raise RuntimeError(f"no location could be created: {self.examples}")
        hires = [self.hire() for _ in range(self.args.employees // 2)]
        gate = asyncio.Semaphore(self.args.clients)

        async def gated(hire: Awaitable[None]) -> None:
            async with gate:
                await hire

        await asyncio.gather(*(gated(h) for h in hires))

    def make_feeds(self) -> None:
        kinds = [FEEDS[name] for name in self.args.feeds.split(",")]
        replicas = len(self.replicas)
        for n in range(self.args.subscribers):  # every kind on every replica, both protocols
            name, query, watch_one, gapless = kinds[(n // replicas) % len(kinds)]
            variables = {"locationId": self.locations[n % len(self.locations)]} if watch_one else {}
            replica = n % replicas
            protocol = (TRANSPORT_WS, LEGACY_WS)[(n // replicas + n % replicas) % 2]
            self.feeds.append(Feed(f"{name} #{n + 1} (replica-{replica + 1}, {protocol})",
                                   replica, protocol, query, variables, gapless, last=self.head))

    async def wait_for(self, check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not await check():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    async def run(self) -> None:
        # Idle connections are dropped well before uvicorn's keep-alive timeout (5 s), or a
        # request sent just as the server closes one fails with a ReadError: not the app's fault.
        limits = httpx.Limits(max_connections=self.args.clients + 8,
                              max_keepalive_connections=self.args.clients + 8,
                              keepalive_expiry=2.0)
        self.clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", limits=limits,
                                          timeout=HTTP_TIMEOUT_SECONDS) for p in self.replicas]
        feeds: list[asyncio.Task[None]] = []
        churn: list[asyncio.Task[None]] = []
        workers: list[asyncio.Task[None]] = []
        try:
            progress("seeding")
            await self.seed()
            self.make_feeds()
            feeds = [asyncio.create_task(self.follow(feed)) for feed in self.feeds]
            persistent = [sum(f.replica == r for f in self.feeds)
                          for r in range(len(self.replicas))]

            async def all_subscribed() -> bool:
                gauges = [await self.subscribers_on(r) for r in range(len(self.replicas))]
                return all(g is not None and g >= want for g, want in zip(gauges, persistent,
                                                                        strict=True))

            if not await self.wait_for(all_subscribed, 15):
                self.error("check", "subscribe", f"the replicas' cqrs_subscribers gauges did not "
                           f"reach {persistent}")
            progress(f"load for {self.load_seconds:.0f} s: {self.args.clients} clients, "
                     f"{len(self.feeds)} subscribers, "
                     f"{'churn on each replica' if self.args.churn else 'no churn'}; "
                     f"warm-up {self.warmup:.0f} s")
            self.started = time.monotonic()
            sampler = asyncio.create_task(self.sampler())
            churn = [asyncio.create_task(self.churn(r)) for r in range(len(self.replicas))
                     if self.args.churn]
            workers = [asyncio.create_task(self.client()) for _ in range(self.args.clients)]
            await sampler
            await asyncio.gather(*workers)
            self.stopping = True
            for task in churn:
                task.cancel()
            await asyncio.gather(*churn, return_exceptions=True)
            await self.settle(persistent)
        finally:
            self.stopping = True
            self.stop.set()
            for task in [*workers, *feeds, *churn]:  # all done already unless interrupted
                task.cancel()
            await asyncio.gather(*workers, *feeds, *churn, return_exceptions=True)
            for client in self.clients:
                await client.aclose()

    async def settle(self, persistent: list[int]) -> None:
        """After the load: the projector catches up, every `events` feed reaches the head, and
        each replica is left feeding exactly the subscribers still connected (churn freed)."""
        status = await self.call("projectionStatus", STATUS, {}, 0)
        if status is None:
            return
        head = status["projectionStatus"]["headPosition"]

        async def caught_up() -> bool:
            now = await self.call("projectionStatus", STATUS, {}, 0)
            self.lag_at_end = None if now is None else now["projectionStatus"]["lag"]
            return self.lag_at_end == 0

        if not await self.wait_for(caught_up, 30):
            self.error("check", "projector", f"still {self.lag_at_end} events behind after 30 s")

        async def feeds_at_head() -> bool:
            return all(f.last >= head for f in self.feeds if f.gapless)

        if not await self.wait_for(feeds_at_head, 15):
            behind = [f"{f.name}: {f.last}" for f in self.feeds if f.gapless and f.last < head]
            self.error("check", "events feed", f"not at the head {head}: {behind}")

        async def churn_freed() -> bool:
            gauges = [await self.subscribers_on(r) for r in range(len(self.replicas))]
            return gauges == [float(n) for n in persistent]

        if not await self.wait_for(churn_freed, 15):
            gauges = [await self.subscribers_on(r) for r in range(len(self.replicas))]
            self.error("check", "subscribers", f"cqrs_subscribers {gauges}, connected {persistent}")


# --- the report ---------------------------------------------------------------------------------


def _mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


@dataclass
class Memory:
    name: str
    pid: int
    start: int | None
    end: int | None
    peak: int | None
    flat: bool
    exit_code: int | None
    killed: bool
    log_lines: int
    threads: str = "—"
    fds: str = "—"

    @property
    def growth(self) -> str:
        if self.start is None or self.end is None:
            return "—"
        delta = self.end - self.start
        return f"{delta / 1024:+.1f} MiB ({100 * delta / self.start:+.1f} %)"


def memories(soak: Soak, pct: float, mib: float) -> list[Memory]:
    rows = []
    start = next((s for s in soak.samples if s.elapsed >= soak.warmup - 0.5), None)
    end = soak.samples[-1] if soak.samples else None
    for process in soak.processes:
        first = start.rss_kib.get(process.name) if start else None
        last = end.rss_kib.get(process.name) if end else None
        seen = [v for s in soak.samples if (v := s.rss_kib.get(process.name)) is not None]
        flat = (first is not None and last is not None
                and last - first <= max(first * pct / 100, mib * 1024))
        rows.append(Memory(
            process.name, process.pid, first, last, max(seen, default=None), flat,
            process.exit_code, process.killed, process.log_lines(),
            _span(start.threads if start else {}, end.threads if end else {}, process.name),
            _span(start.fds if start else {}, end.fds if end else {}, process.name)))
    return rows


def _span(start: dict[str, int | None], end: dict[str, int | None], name: str) -> str:
    first, last = start.get(name), end.get(name)
    return "—" if first is None or last is None else f"{first} → {last}"


def curve(soak: Soak, name: str, points: int = 16) -> str:
    values = [(s.elapsed, s.rss_kib.get(name)) for s in soak.samples]
    if len(values) > points:
        step = (len(values) - 1) / (points - 1)
        values = [values[round(i * step)] for i in range(points)]
    return "  ".join(f"{t:.0f}s:{kib / 1024:.0f}" for t, kib in values if kib is not None)


def report(soak: Soak, rows: list[Memory], args: argparse.Namespace, interrupted: bool) -> bool:
    """Print the tables and the verdicts; True if the run passed."""
    warm = f"after {soak.warmup:.0f} s"
    print(f"\nsoak: {soak.load_seconds / 60:g} min, 2 replicas + 1 projector, "
          f"{args.clients} clients, {len(soak.feeds)} subscribers, samples every "
          f"{args.sample_seconds:g} s, warm-up {soak.warmup:.0f} s"
          f"{', with ' + ' '.join(args.app_env) if args.app_env else ''}"
          f"{' — INTERRUPTED' if interrupted else ''}\n")
    print(f"| process | pid | RSS start ({warm}) | RSS end | RSS max | growth | exit "
          f"| log lines ≥ WARNING | threads | open fds | |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        killed = " (killed)" if r.killed else ""
        exit_text = "—" if r.exit_code is None else f"{r.exit_code}{killed}"
        print(f"| {r.name} | {r.pid} | {_mib(r.start)} | {_mib(r.end)} | {_mib(r.peak)} | "
              f"{r.growth} | {exit_text} | {r.log_lines} | {r.threads} | {r.fds} | "
              f"{'✅' if r.flat else '❌'} |")
    first = next((s for s in soak.samples if s.elapsed >= 0), None)
    last = soak.samples[-1] if soak.samples else None
    seconds = (last.elapsed - first.elapsed) if first and last else 0.0
    requests = (last.requests - first.requests) if first and last else soak.requests
    rate = requests / seconds if seconds > 0 else 0.0
    mutations = sum(n for op, n in soak.ops.items() if op in _MUTATIONS)
    outcomes = ", ".join(f"{code} {n:,}" for code, n in soak.domain.most_common()) or "none"
    reconnects = sum(f.reconnects for f in soak.feeds)
    print()
    print("| load | |")
    print("|---|---:|")
    print(f"| requests (load phase) | {requests:,} in {seconds:.0f} s = {rate:,.1f} req/s |")
    print(f"| of which mutations (whole run) | {mutations:,} of {soak.requests:,} |")
    print(f"| error responses | {soak.errors:,} |")
    print(f"| expected domain outcomes | {outcomes} |")
    print(f"| subscription deliveries | {soak.deliveries:,} to {len(soak.feeds)} subscribers "
          f"({reconnects} reconnects) |")
    print(f"| subscriber churn | {soak.churned:,} connect/subscribe/close cycles |")
    print(f"| events in the store | {soak.head:,} (projector lag at the end: "
          f"{'—' if soak.lag_at_end is None else soak.lag_at_end}) |")
    print(f"| staff at the end | {len(soak.employees):,} employees, "
          f"{len(soak.locations)} locations |")
    print("\n| operation (whole run) | requests | p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|")
    for op, count in soak.ops.most_common():
        times = sorted(soak.latencies.get(op, []))
        if times:
            p50, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
            print(f"| {op} | {count:,} | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | "
                  f"{times[-1] * 1000:.0f} ms |")
    print("\nRSS curve (elapsed s: MiB):")
    for r in rows:
        print(f"  {r.name:<10} {curve(soak, r.name)}")
    if soak.examples:
        print(f"\nerrors by kind: {dict(soak.error_kinds.most_common())}")
        print("first errors:")
        for example in soak.examples:
            print(f"  {example}")
    flat = bool(rows) and all(r.flat for r in rows)
    clean = all(r.exit_code == 0 and not r.killed for r in rows)
    if not rows or any(r.start is None for r in rows):
        verdict = ["memory not judged (no sample after the warm-up)"]
    else:
        verdict = ["memory flat" if flat else "memory NOT flat: " + ", ".join(
            f"{r.name} {r.growth}" for r in rows if not r.flat)]
    verdict.append("no error responses" if soak.errors == 0 else f"{soak.errors:,} errors")
    if not clean:
        verdict.append("a process did not exit cleanly: " + ", ".join(
            f"{r.name} exit {r.exit_code}{' (killed)' if r.killed else ''}"
            for r in rows if r.exit_code != 0 or r.killed))
    if interrupted:
        verdict.append("interrupted")
    print(f"\nverdict: {'; '.join(verdict)} (flat: end within "
          f"{args.tolerance_pct:g} % or {args.tolerance_mib:g} MiB of the start)")
    return flat and clean and soak.errors == 0 and not interrupted


_MUTATIONS = {"createLocation", "createEmployee", "assignEmployeeToLocation",
              "changeEmployeeJobTitle", "terminateEmployee"}


def write_csv(path: Path, soak: Soak) -> None:
    names = [p.name for p in soak.processes]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["elapsed_s", *(f"{n}_rss_kib" for n in names), "requests", "errors",
                         "domain_outcomes", "deliveries", "subscribers_connected",
                         *(f"{n}_threads" for n in names), *(f"{n}_fds" for n in names)])
        for s in soak.samples:
            writer.writerow([f"{s.elapsed:.1f}", *(_blank(s.rss_kib.get(n)) for n in names),
                             s.requests, s.errors, s.domain, s.deliveries, s.subscribers,
                             *(_blank(s.threads.get(n)) for n in names),
                             *(_blank(s.fds.get(n)) for n in names)])


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


# --- main ---------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    cli.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    cli.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                              SOAK_POSTGRES),
                     help="the event store (its tables are dropped first; the database is "
                          "created if missing)")
    cli.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
                     help="the read model (a fresh REDIS_PREFIX per run, deleted at the end)")
    cli.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    cli.add_argument("--subscribers", type=int, default=8, help="long-lived websocket subscribers")
    cli.add_argument("--locations", type=int, default=20, help="locations created at the start")
    cli.add_argument("--employees", type=int, default=400, help="staff the load hovers around")
    cli.add_argument("--feeds", default=",".join(FEEDS),
                     help=f"the subscribers' subscriptions, in turn (default: {','.join(FEEDS)})")
    cli.add_argument("--churn", action=argparse.BooleanOptionalAction, default=True,
                     help="connect/subscribe/close cycles on each replica (default on)")
    cli.add_argument("--sample-seconds", type=float, default=10.0, help="sampling interval")
    cli.add_argument("--warmup-seconds", type=float, default=None,
                     help="RSS 'start' is taken after this (default: 30 s or 10 %% of the run, "
                          "whichever is shorter)")
    cli.add_argument("--tolerance-pct", type=float, default=10.0,
                     help="memory is flat if it grew by at most this %% ...")
    cli.add_argument("--tolerance-mib", type=float, default=10.0, help="... or this many MiB")
    cli.add_argument("--csv", type=Path, default=None, help="write the samples here")
    cli.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                     help="a setting for every app process (repeatable), e.g. "
                          "AGGREGATE_CACHE_SIZE=1000")
    args = cli.parse_args(argv)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.clients < 1:
        cli.error("--minutes, --sample-seconds and --clients must be positive")
    if args.locations < 1:
        cli.error("--locations must be at least 1")
    if not args.feeds or set(args.feeds.split(",")) - set(FEEDS):
        cli.error(f"--feeds: a comma-separated subset of {', '.join(FEEDS)}")
    if any("=" not in item for item in args.app_env):
        cli.error("--app-env takes NAME=VALUE")
    return args


def _terminated(_signum: int, _frame: object) -> None:
    signal.raise_signal(signal.SIGINT)  # SIGTERM to the soak: stop like Ctrl-C, processes and all


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminated)
    load_seconds = args.minutes * 60
    warmup = (args.warmup_seconds if args.warmup_seconds is not None
              else min(30.0, load_seconds * 0.1))
    warmup = min(max(warmup, 0.0), load_seconds)
    try:
        asyncio.run(prepare_postgres(args.postgres_url))
        check_redis(args.redis_url)
    except RuntimeError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    prefix = unique_prefix("soak")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    processes: list[Process] = []
    soak: Soak | None = None
    interrupted = failed = False
    try:
        progress(f"starting 2 replicas and the projector (REDIS_PREFIX={prefix}, logs in {work})")
        env = app_env(args.postgres_url, args.redis_url, prefix, work)
        env.update(item.split("=", 1) for item in args.app_env)
        start_cluster(work, env, processes)
        soak = Soak(args, processes, warmup, load_seconds=load_seconds)
        asyncio.run(soak.run())
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: stopping every process")
    except Exception:
        failed = True
        traceback.print_exc()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
            signal.signal(signum, signal.SIG_IGN)
        stop_all(processes)
        with contextlib.suppress(Exception):
            asyncio.run(drop_prefix(args.redis_url, prefix))
    if soak is None:
        for process in processes:
            print(f"--- {process.name} (exit {process.exit_code}):\n{process.log_tail()}",
                  file=sys.stderr)
        return 130 if interrupted else 1
    if soak.samples and args.csv is not None:
        write_csv(args.csv, soak)
    passed = report(soak, memories(soak, args.tolerance_pct, args.tolerance_mib), args,
                    interrupted) and not failed
    if passed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(the processes' logs are kept in {work})")
    if interrupted:
        return 130
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
