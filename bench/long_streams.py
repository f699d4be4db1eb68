"""Long streams: command latency on an employee with 100 000 events against a fresh employee.

A SQLite store gets one employee whose stream holds 100 000 events (hired, then 99 998 job-title
changes, bulk-inserted as the store would have written them) and one freshly hired employee.
Command handlers with the aggregate cache OFF (every command loads its aggregates from the store:
the snapshot path) then change each one's job title, alternately, one command at a time. The
first load of the long stream replays it once and writes a snapshot (warm-up, not timed); after
that every load must start from a snapshot (SNAPSHOT_EVERY = 100) and replay < 100 events: the
benchmark checks both. Goal: p50 on the long stream ≤ 1.5× p50 on the fresh one.

    python -m bench.long_streams [--quick] [--repeats N]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from app.domain import commands as c
from app.domain import events as e
from app.domain.schema import default_schema, to_data
from app.event_store import open_store
from app.service.handlers import CommandContext, CommandHandlers
from bench.common import Figure, Options, cli, median, progress

CTX = CommandContext("bench")
SNAPSHOT_EVERY = 100
LONG, FRESH = 1, 2


def bulk_long_stream(path: Path, length: int) -> None:
    """location-1, and employee-1 with `length` events, written as the store would have."""
    schema = default_schema()
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    history: list[tuple[str, e.DomainEvent]] = [
        (e.location_stream(1), e.LocationCreated(1, "1 Main", "Town", "ST", "00001")),
        (e.employee_stream(LONG), e.EmployeeCreated(LONG, "Ana", "Long", dt.date(1990, 1, 1),
                                                    "Cook")),
        (e.employee_stream(LONG), e.EmployeeAssignedToLocation(LONG, 1)),
    ]
    history += [(e.employee_stream(LONG), e.EmployeeJobTitleChanged(LONG, f"Title {n}"))
                for n in range(length - 2)]
    versions: dict[str, int] = {}
    rows = []
    for position, (stream, event) in enumerate(history, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        name = type(event).__name__
        moment = (start + dt.timedelta(milliseconds=position)).strftime("%Y-%m-%d %H:%M:%S.%f")
        rows.append((position, stream, versions[stream], name, schema.version_of(name),
                     json.dumps(to_data(event)), '{"correlation_id": "bench"}', moment, position))
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO streams VALUES (?, ?, ?, ?)",
                       [(s, s.rsplit("-", 1)[0], int(s.rsplit("-", 1)[1]), v)
                        for s, v in versions.items()])
    db.close()


async def measure(path: Path, length: int, commands: int) -> dict[str, float]:
    url = f"sqlite+aiosqlite:///{path}"
    await (await open_store(url, default_schema())).close()
    await asyncio.to_thread(bulk_long_stream, path, length)
    store = await open_store(url, default_schema())
    handlers = CommandHandlers(store, default_schema(), snapshot_every=SNAPSHOT_EVERY,
                               cache_size=0)
    try:
        await handlers.create_employee(
            c.CreateEmployee("Ben", "Fresh", dt.date(1990, 1, 1), "Cook", 1, FRESH), CTX)
        started = time.perf_counter()
        await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(LONG, "warm"), CTX)
        warm_up = time.perf_counter() - started
        snapshot = await store.load_snapshot(e.employee_stream(LONG))
        timings: dict[int, list[float]] = {LONG: [], FRESH: []}
        for n in range(commands):
            for employee in (LONG, FRESH):
                started = time.perf_counter()
                await handlers.change_employee_job_title(
                    c.ChangeEmployeeJobTitle(employee, f"Title {n}"), CTX)
                timings[employee].append(time.perf_counter() - started)
        # then, untimed: commands on the long stream alone, counting how its loads went (each
        # command loads the employee, from its snapshot, and its location, which has none)
        repo = handlers.repository
        loads, replayed = repo.snapshot_loads, repo.events_replayed
        checks = 20
        for n in range(checks):
            await handlers.change_employee_job_title(
                c.ChangeEmployeeJobTitle(LONG, f"Check {n}"), CTX)
        long_loads = repo.snapshot_loads - loads
        per_load = (repo.events_replayed - replayed) / checks
    finally:
        await store.close()
    return {
        "long p50": statistics.median(timings[LONG]) * 1000,
        "fresh p50": statistics.median(timings[FRESH]) * 1000,
        "warm-up": warm_up * 1000,
        "snapshot version": snapshot.version if snapshot else 0,
        "snapshot loads": long_loads,
        "loads": checks,
        "replayed per load": per_load,
    }


def run(options: Options) -> list[Figure]:
    length = 2_000 if options.quick else 100_000
    commands = 20 if options.quick else 200
    progress(f"long streams: {length:,} events, {commands} commands each, "
             f"{options.repeats} repeats")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(options.repeats):
            results.append(asyncio.run(measure(Path(tmp) / f"long{n}.db", length, commands)))
    last = results[-1]
    if (last["snapshot version"] < length - SNAPSHOT_EVERY or last["replayed per load"] >= 100
            or last["snapshot loads"] < last["loads"]):
        raise AssertionError(f"the snapshot path was not taken: {last}")
    note = (f"snapshot at v{last['snapshot version']:.0f}; {last['snapshot loads']:.0f} of "
            f"{last['loads']:.0f} long-stream loads from it, {last['replayed per load']:.0f} "
            f"events replayed per command on average; first load (replays all) "
            f"{median([r['warm-up'] for r in results]):.0f} ms")
    return [Figure(
        "long streams", f"changeEmployeeJobTitle p50, {length:,}-event stream (no cache)",
        median([r["long p50"] for r in results]), "ms",
        "same command, fresh employee", median([r["fresh p50"] for r in results]), 1.5,
        higher_is_better=False, note=note,
    )]


cli(__name__, run, __doc__)
