"""Commands in-process: our CommandHandlers over our event store against `eventsourcing`.

Two commands, on equivalent aggregates and the same database engine, no HTTP:
  create employee — check the location exists, record EmployeeCreated + EmployeeAssignedToLocation
  move employee   — load the employee and the target location, record Removed + Assigned
Ours runs 100 concurrent clients (asyncio tasks; appends are group-committed) and one client;
eventsourcing (synchronous) runs one thread and 8 threads, and its better figure is the baseline.
Both keep SQLite's default durability (WAL, synchronous=FULL: each commit is synced to disk).
Goal (SQLite): ≥ 3× eventsourcing's commands/s. The PostgreSQL variant is reported.

    python -m bench.commands [--quick] [--repeats N] [--postgres-url URL]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store import open_store
from app.service.handlers import CommandContext, CommandHandlers
from bench.common import (
    Figure,
    Options,
    Stopwatch,
    cli,
    median,
    postgres_reachable,
    progress,
    reset_postgres,
)

LOCATIONS = 10
CLIENTS = 100
THREADS = 8
CTX = CommandContext("bench")
NS = uuid.NAMESPACE_URL


# --- the eventsourcing side: the same two aggregates, the same two commands -------------------


class EsLocation(Aggregate):
    @classmethod
    def create_id(cls, location_id: int) -> uuid.UUID:
        return uuid.uuid5(NS, f"/locations/{location_id}")

    @event("Created")
    def __init__(self, location_id: int, street_address: str, city: str, state: str,
                 postal_code: str) -> None:
        self.location_id = location_id
        self.street_address, self.city, self.state = street_address, city, state
        self.postal_code = postal_code


class EsEmployee(Aggregate):
    @classmethod
    def create_id(cls, employee_id: int) -> uuid.UUID:
        return uuid.uuid5(NS, f"/employees/{employee_id}")

    @event("Created")
    def __init__(self, employee_id: int, first_name: str, last_name: str, date_of_birth: str,
                 job_title: str) -> None:
        self.employee_id = employee_id
        self.first_name, self.last_name = first_name, last_name
        self.date_of_birth, self.job_title = date_of_birth, job_title
        self.location_id: int | None = None

    @event("AssignedToLocation")
    def assign(self, location_id: int) -> None:
        self.location_id = location_id

    @event("RemovedFromLocation")
    def remove(self, location_id: int) -> None:
        self.location_id = None


class Restaurants(Application[uuid.UUID]):
    def create_location(self, n: int) -> None:
        self.save(EsLocation(n, "1 Main", "Town", "ST", "00001"))

    def create_employee(self, n: int, location_id: int) -> None:
        location: EsLocation = self.repository.get(EsLocation.create_id(location_id))
        employee = EsEmployee(n, "Ana", "Smith", "1990-01-01", "Cook")
        employee.assign(location.location_id)
        self.save(employee)

    def move_employee(self, n: int, location_id: int) -> None:
        employee: EsEmployee = self.repository.get(EsEmployee.create_id(n))
        target: EsLocation = self.repository.get(EsLocation.create_id(location_id))
        if employee.location_id is not None:
            employee.remove(employee.location_id)
        employee.assign(target.location_id)
        self.save(employee)


def eventsourcing_rates(env: dict[str, str], n: int, threads: int) -> tuple[float, float]:
    """(creates/s, moves/s) of the eventsourcing application on a fresh database."""
    app = Restaurants(env=env)
    try:
        for n_location in range(1, LOCATIONS + 1):
            app.create_location(n_location)
        ids = range(1, n + 1)
        with ThreadPoolExecutor(threads) as pool:
            with Stopwatch() as create:
                list(pool.map(lambda i: app.create_employee(i, 1 + i % LOCATIONS), ids))
            with Stopwatch() as move:
                list(pool.map(lambda i: app.move_employee(i, 1 + (i + 1) % LOCATIONS), ids))
    finally:
        app.close()
    return n / create.seconds, n / move.seconds


# --- our side ---------------------------------------------------------------------------------


async def our_rates(url: str, n: int, clients: int) -> tuple[float, float]:
    """(creates/s, moves/s) of our command handlers with `clients` concurrent callers."""
    schema = default_schema()
    store = await open_store(url, schema)
    handlers = CommandHandlers(store, schema)
    try:
        for n_location in range(1, LOCATIONS + 1):
            await handlers.create_location(
                c.CreateLocation("1 Main", "Town", "ST", "00001", n_location), CTX
            )

        async def create(i: int) -> None:
            await handlers.create_employee(
                c.CreateEmployee("Ana", "Smith", dt.date(1990, 1, 1), "Cook",
                                 1 + i % LOCATIONS, i), CTX)

        async def move(i: int) -> None:
            await handlers.assign_employee_to_location(
                c.AssignEmployeeToLocation(i, 1 + (i + 1) % LOCATIONS), CTX)

        with Stopwatch() as creating:
            await drive(create, n, clients)
        with Stopwatch() as moving:
            await drive(move, n, clients)
    finally:
        await store.close()
    return n / creating.seconds, n / moving.seconds


async def drive(command: Any, n: int, clients: int) -> None:
    """Ids 1..n shared by `clients` concurrent callers, each running one command at a time."""
    ids = iter(range(1, n + 1))

    async def client() -> None:
        for i in ids:
            await command(i)

    await asyncio.gather(*(client() for _ in range(clients)))


# --- the comparison ---------------------------------------------------------------------------


def measure(
    label: str, ours_url: Any, es_env: Any, reset: Any, n: int, repeats: int, goal: float | None
) -> list[Figure]:
    ours_many: list[tuple[float, float]] = []
    ours_one: list[tuple[float, float]] = []
    es: list[tuple[float, float]] = []
    for _ in range(repeats):  # interleaved, so drift in the machine's load hits both alike
        reset()
        ours_many.append(asyncio.run(our_rates(ours_url(), n, CLIENTS)))
        reset()
        ours_one.append(asyncio.run(our_rates(ours_url(), max(n // 4, 10), 1)))
        reset()
        single = eventsourcing_rates(es_env(), n, 1)
        reset()
        threaded = eventsourcing_rates(es_env(), n, THREADS)
        es.append((max(single[0], threaded[0]), max(single[1], threaded[1])))
    figures = []
    for index, command in enumerate(("create employee", "move employee")):
        baseline = median([e[index] for e in es])
        figures += [
            Figure("commands", f"{command}, {CLIENTS} clients ({label})",
                   median([o[index] for o in ours_many]), "cmd/s",
                   "eventsourcing (best of 1 / 8 threads)", baseline, goal),
            Figure("commands", f"{command}, 1 client ({label})",
                   median([o[index] for o in ours_one]), "cmd/s",
                   "eventsourcing (best of 1 / 8 threads)", baseline),
        ]
    return figures


def run(options: Options) -> list[Figure]:
    n = 60 if options.quick else 2000
    progress(f"commands: SQLite, {n} of each command, {options.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        counter = [0]

        def fresh_path() -> Path:
            counter[0] += 1
            return Path(tmp) / f"run{counter[0]}.db"

        figures = measure(
            "SQLite",
            lambda: f"sqlite+aiosqlite:///{fresh_path()}",
            lambda: {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                     "SQLITE_DBNAME": str(fresh_path())},
            lambda: None, n, options.repeats, 3.0,
        )
    url = options.postgres_url
    if url and postgres_reachable(url):
        progress(f"commands: PostgreSQL, {n} of each command")
        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        user_host, _, dbname = plain.removeprefix("postgresql://").rpartition("/")
        user, _, host_port = user_host.rpartition("@")
        host, _, port = host_port.partition(":")
        es_env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": dbname,
                  "POSTGRES_HOST": host, "POSTGRES_PORT": port or "5432",
                  "POSTGRES_USER": user or "postgres", "POSTGRES_PASSWORD": ""}
        figures += measure(
            "PostgreSQL", lambda: url, lambda: es_env,
            lambda: asyncio.run(reset_postgres(url, ("restaurants_events",))),
            n, options.repeats, None,
        )
    else:
        figures.append(Figure("commands", "PostgreSQL variant", None, "",
                              note="skipped: no PostgreSQL (--postgres-url)"))
    return figures


cli(__name__, run, __doc__)
