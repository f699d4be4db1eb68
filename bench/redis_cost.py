"""What one Redis primary spends per query, per projected event and per subscriber of the change
feed: the figures behind docs/scaling.md.

A private redis-server (Debian's /usr/bin/redis-server, else an embedded Valkey) holds the read
model of a restaurant history (bench/history.py: 20 locations × 50 employees, then title changes
and moves), projected by the real projector. Then, each with the server's statistics reset:
  - the projection itself, in rebuild-sized batches and one commit per batch as live load
    comes: server CPU (INFO cpu, user + system) per event;
  - each query type, run in-process (schema.execute, no HTTP, no document cache: every read
    reaches Redis, as a cache miss or a time-travel read does): server CPU per query, and the
    commands it ran with their `usec_per_call` (INFO commandstats);
  - PUBLISH of one change message (the size a live two-event commit publishes) to 0, 10 and
    100 subscriber connections, each drained by its own reader: server CPU per message.

Each figure is the median of `--repeats` runs, each on a fresh server.

    python -m bench.redis_cost [--events N] [--queries N] [--messages N] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from app.bootstrap import bootstrap
from app.event_store.base import RecordedEvent
from app.projections.documents import Change
from app.projector.loop import Projector
from app.read_model.changes import encode, of
from app.read_model.layout import Keys
from app.schema import build_schema
from app.schema.context import Context
from app.settings import Settings
from bench.common import redis_server
from bench.history import write_sqlite
from bench.server import free_port

SCHEMA = build_schema()
EMPLOYEE = "id firstName lastName jobTitle locationId version updatedAt"
PAGE = f"totalCount edges {{ node {{ {EMPLOYEE} }} }}"
STAFF = f"id city employees {{ {EMPLOYEE} }}"
QUERIES: dict[str, str] = {
    "employee(id)": f"{{ employee(id: 7) {{ {EMPLOYEE} }} }}",
    "location(id) { employees } (50)":
        f"{{ location(id: 3) {{ {STAFF} }} }}",
    "locations { id city } (20)": "{ locations { id city } }",
    "employees(first: 50)":
        f"{{ employees(first: 50) {{ {PAGE} }} }}",
    "employee(id, atPosition)":
        f"query($at: Int) {{ employee(id: 7, atPosition: $at) {{ {EMPLOYEE} }} }}",
    "location(id, atPosition) { employees } (50)":
        f"query($at: Int) {{ location(id: 3, atPosition: $at) {{ {STAFF} }} }}",
    "employees(locationId, first: 50, atPosition)":
        f"query($at: Int) {{ employees(locationId: 3, first: 50, atPosition: $at) {{ {PAGE} }} }}",
}
SUBSCRIBERS = (0, 10, 100)
LIVE_EVENTS = 3000
# the measurement's own commands and a client's start-up, not the work measured
HOUSEKEEPING = {"config", "info", "hello", "ping", "client", "script", "multi", "exec"}


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own (statistics we may reset), torn down after the block."""
    binary = shutil.which("redis-server")
    if binary is None:
        with redis_server(None) as url:  # an embedded Valkey
            yield url
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", tmp], stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                 text=True, check=False).stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    raise TimeoutError("redis-server did not start")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=20)


async def server_cpu(redis: Redis) -> float:
    """The server's CPU seconds so far (user + system, main thread and all)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@contextlib.asynccontextmanager
async def measured(redis: Redis, out: dict[str, Any]) -> AsyncIterator[None]:
    """Reset the statistics, run the block, put the CPU seconds and per-command stats in `out`."""
    await redis.config_resetstat()
    before = await server_cpu(redis)
    yield
    out["cpu"] = await server_cpu(redis) - before
    stats = await redis.info("commandstats")
    out["commands"] = {name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
                       for name, v in stats.items()
                       if name.removeprefix("cmdstat_").partition("|")[0] not in HOUSEKEEPING}


async def queries(url: str, tmp: Path, events: int, count: int) -> dict[str, dict[str, Any]]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'events.db'}", redis_url=url,
                        redis_prefix="cost", projector_batch_size=5000, document_cache_size=0)
    results: dict[str, dict[str, Any]] = {}
    async with bootstrap(settings, follow=False) as services:
        written = await asyncio.to_thread(write_sqlite, tmp / "events.db", events)
        stats: dict[str, Any] = {}
        async with measured(services.redis, stats):
            await services.projector.catch_up()
        results["projection, batches of 5 000 (per event)"] = {**stats, "n": written}
        # live: one commit per batch, published (the store never splits one append)
        live = Projector(services.store, services.redis, Keys("cost-live"), batch_size=1)
        stats = {}
        async with measured(services.redis, stats):
            await live.catch_up(until=LIVE_EVENTS)
        results["projection, one commit per batch (per event)"] = {
            **stats, "n": live.position}
        at = written // 2
        for name, query in QUERIES.items():
            stats = {}
            async with measured(services.redis, stats):
                for _ in range(count):
                    result = await SCHEMA.execute(query, variable_values={"at": at},
                                                  context_value=Context(services, "bench"))
                    assert result.errors is None, result.errors
            results[name] = {**stats, "n": count}
    return results


async def fan_out(url: str, subscribers: int, message: bytes, messages: int) -> float:
    """Server CPU µs per PUBLISH of `message` to `subscribers` connections reading it all."""
    channel = b"cost:fanout"
    readers = []
    frame = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel), channel, len(message), message)
    want = subscribers * messages * len(frame)
    received = [0]
    delivered = asyncio.Event()  # every subscriber has every copy: all the writes are counted
    if not want:
        delivered.set()

    async def drain(reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(1 << 16):
            received[0] += len(chunk)
            if received[0] >= want:
                delivered.set()

    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    for _ in range(subscribers):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"SUBSCRIBE %b\r\n" % channel)
        await writer.drain()
        await reader.readuntil(b":1\r\n")
        readers.append((asyncio.create_task(drain(reader)), writer))
    publisher = Redis.from_url(url)
    try:
        stats: dict[str, Any] = {}
        async with measured(publisher, stats):
            for start in range(0, messages, 500):
                async with publisher.pipeline(transaction=False) as pipe:
                    for _ in range(start, min(start + 500, messages)):
                        pipe.publish(channel, message)
                    await pipe.execute()
            await asyncio.wait_for(delivered.wait(), 120)
        return float(stats["cpu"]) / messages * 1e6
    finally:
        for task, writer in readers:
            writer.close()
            task.cancel()
        await publisher.aclose()


def report(results: dict[str, dict[str, Any]], fan: dict[int, float], size: int) -> None:
    print(f"\n{'what':46} {'server CPU µs':>14}   commands (calls per op, µs per call)")
    for name, r in results.items():
        n = r["n"]
        detail = ", ".join(f"{cmd} {calls / n:.2g}× {usec / calls:.1f}"
                           for cmd, (calls, usec) in sorted(r["commands"].items())
                           if calls / n >= 0.0001)
        print(f"{name:46} {r['cpu'] / n * 1e6:14.1f}   {detail}")
    print(f"\nPUBLISH of a {size}-byte change message")
    for subscribers, cpu in fan.items():
        print(f"  {subscribers:4} subscribers: {cpu:8.1f} µs server CPU per message")
    if fan.get(100) is not None and fan.get(0) is not None:
        print(f"  per subscriber per message: {(fan[100] - fan[0]) / 100:.2f} µs")


async def main(events: int, count: int, messages: int, repeats: int) -> None:
    """Each figure measured `repeats` times on a fresh server; the median run is reported."""
    runs: list[dict[str, dict[str, Any]]] = []
    fans: list[dict[int, float]] = []
    message = _typical_message()
    for _ in range(repeats):
        with private_redis() as url, tempfile.TemporaryDirectory() as tmp:
            runs.append(await queries(url, Path(tmp), events, count))
            fans.append({n: await fan_out(url, n, message, messages) for n in SUBSCRIBERS})
    results = {name: sorted((run[name] for run in runs), key=lambda r: r["cpu"] / r["n"])
               [len(runs) // 2] for name in runs[0]}
    fan = {n: statistics.median(f[n] for f in fans) for n in SUBSCRIBERS}
    report(results, fan, len(message))


def _typical_message() -> bytes:
    """The change message of one live hire (two events, two documents), as the projector
    publishes it."""
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    employee = {"id": 7, "first_name": "Ana", "last_name": "Smith", "date_of_birth": "1990-01-01",
                "job_title": "Cook", "location_id": 3, "personal_data_erased": False,
                "version": 2, "updated_at": moment.isoformat(), "position": 1001}
    location = {"id": 3, "street_address": "3 Main", "city": "Town", "state": "ST",
                "postal_code": "00003", "employee_ids": list(range(1, 51)), "version": 1,
                "updated_at": moment.isoformat(), "position": 3}
    events = [RecordedEvent(1000 + n, "employee-7", n, kind, 1, data, {"correlation_id": "c"},
                            moment, 1001)
              for n, (kind, data) in enumerate((
                  ("EmployeeCreated", {"employee_id": 7, "first_name": "Ana"}),
                  ("EmployeeAssignedToLocation", {"employee_id": 7, "location_id": 3})), 1)]
    changes = [Change(1001, "CREATED", "employee", 7, employee),
               Change(1001, "UPDATED", "location", 3, location)]
    return encode(of(999, changes, events), orjson.dumps)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.queries, args.messages, args.repeats))
