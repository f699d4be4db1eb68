"""Concurrent appends: 100 asyncio tasks each issuing single-event commands, against the floor.

Ours: 100 concurrent tasks, each changing the job title of its own employee again and again
(`CommandHandlers.change_employee_job_title`: one EmployeeJobTitleChanged per command, guarded by
the employee's and its location's versions), over the event store, whose writer commits every
waiting append in one transaction (group commit).
Floor: the very rows our run wrote, inserted by 100 concurrent tasks through the raw driver, one
row per transaction (BEGIN IMMEDIATE; INSERT; COMMIT on one aiosqlite connection; on PostgreSQL
asyncpg with a pool of 10), with the same durability (SQLite WAL, synchronous=FULL).
Goal (SQLite): ≥ 3× the floor's rows/s. The PostgreSQL variant is reported.

    python -m bench.appends [--quick] [--repeats N] [--postgres-url URL]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import tempfile
from pathlib import Path

import aiosqlite

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

TASKS = 100
CTX = CommandContext("bench")
COLUMNS = ("position, stream_id, version, type, schema_version, data, metadata, recorded_at, "
           "commit_position")


async def ours(url: str, per_task: int) -> tuple[float, int]:
    """(commands/s, head before the measured commands) with TASKS concurrent tasks."""
    schema = default_schema()
    store = await open_store(url, schema)
    handlers = CommandHandlers(store, schema)
    try:
        await handlers.create_location(c.CreateLocation("1 Main", "Town", "ST", "00001", 1), CTX)
        for n in range(1, TASKS + 1):
            await handlers.create_employee(
                c.CreateEmployee("Ana", "Smith", dt.date(1990, 1, 1), "Cook", 1, n), CTX)
        head = await store.head_position()

        async def task(n: int) -> None:
            for k in range(per_task):
                await handlers.change_employee_job_title(
                    c.ChangeEmployeeJobTitle(n, f"Title {k}"), CTX)

        with Stopwatch() as watch:
            await asyncio.gather(*(task(n) for n in range(1, TASKS + 1)))
    finally:
        await store.close()
    return TASKS * per_task / watch.seconds, head


async def sqlite_floor(source: Path, after: int, target: Path) -> float:
    """Rows/s of one-row transactions re-inserting our run's rows, TASKS tasks at once."""
    with sqlite3.connect(source) as db:
        rows = db.execute(f"SELECT {COLUMNS} FROM events WHERE position > ? ORDER BY position",
                          (after,)).fetchall()
    await (await open_store(f"sqlite+aiosqlite:///{target}", default_schema())).close()
    async with aiosqlite.connect(target, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        lock = asyncio.Lock()  # one transaction at a time on the shared connection
        queue = iter(rows)

        async def task() -> None:
            for row in queue:
                async with lock:
                    await conn.execute("BEGIN IMMEDIATE")
                    await conn.execute(f"INSERT INTO events ({COLUMNS}) VALUES "
                                       "(?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                    await conn.execute("COMMIT")

        with Stopwatch() as watch:
            await asyncio.gather(*(task() for _ in range(TASKS)))
    return len(rows) / watch.seconds


async def postgres_floor(url: str, after: int) -> float:
    import asyncpg  # type: ignore[import-untyped]

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM events WHERE position > $1 "
                                    "ORDER BY position", after)
            await conn.execute("DROP TABLE IF EXISTS bench_events")
            await conn.execute("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        queue = iter(rows)

        async def task() -> None:
            for row in queue:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(f"INSERT INTO bench_events ({COLUMNS}) VALUES "
                                       "($1, $2, $3, $4, $5, $6, $7, $8, $9)", *row)

        with Stopwatch() as watch:
            await asyncio.gather(*(task() for _ in range(TASKS)))
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE bench_events")
    finally:
        await pool.close()
    return len(rows) / watch.seconds


def run(options: Options) -> list[Figure]:
    per_task = 2 if options.quick else 30
    progress(f"appends: SQLite, {TASKS} tasks × {per_task} commands, {options.repeats} repeats")
    ours_rates, floor_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(options.repeats):
            source = Path(tmp) / f"ours{n}.db"
            rate, head = asyncio.run(ours(f"sqlite+aiosqlite:///{source}", per_task))
            ours_rates.append(rate)
            floor_rates.append(asyncio.run(sqlite_floor(source, head, Path(tmp) / f"raw{n}.db")))
    figures = [Figure(
        "appends", f"{TASKS} tasks × single-event commands (SQLite)", median(ours_rates), "cmd/s",
        "raw aiosqlite, 1 row per transaction", median(floor_rates), 3.0,
    )]
    url = options.postgres_url
    if url and postgres_reachable(url):
        progress("appends: PostgreSQL")
        ours_rates, floor_rates = [], []
        for _ in range(options.repeats):
            asyncio.run(reset_postgres(url, ("bench_events",)))
            rate, head = asyncio.run(ours(url, per_task))
            ours_rates.append(rate)
            floor_rates.append(asyncio.run(postgres_floor(url, head)))
        figures.append(Figure(
            "appends", f"{TASKS} tasks × single-event commands (PostgreSQL)", median(ours_rates),
            "cmd/s", "raw asyncpg (pool 10), 1 row per transaction", median(floor_rates),
        ))
    else:
        figures.append(Figure("appends", "PostgreSQL variant", None, "",
                              note="skipped: no PostgreSQL (--postgres-url)"))
    return figures



cli(__name__, run, __doc__)
