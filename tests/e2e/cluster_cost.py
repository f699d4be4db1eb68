"""What the sharded spike costs Redis beside today's single node, for docs/scaling.md.

One restaurant history (bench/history.py) is projected twice: by today's projector into one
redis-server, and by the spike (tests/e2e/cluster_prototype.py) into 6 shards on a local
3-master cluster. The same reads are then made at the same position through today's ReadModel and
through the spike's scatter-gather reader. Reported: the servers' CPU (INFO cpu, user + system,
summed over the cluster's masters, less what they spend idle) per projected event and per read.
Redis-side only: no GraphQL, no HTTP.

    python -m tests.e2e.cluster_cost [--events N] [--reads N] [--idle-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app.domain.schema import default_schema
from app.event_store import open_store
from app.projector.loop import Projector
from app.read_model.layout import Keys
from app.read_model.redis import ReadModel
from bench.history import write_sqlite
from bench.redis_cost import private_redis
from tests.e2e.cluster_prototype import LocalCluster, ShardedProjector, ShardedReader

SHARDS = 6


async def cpu(nodes: Sequence[Redis]) -> float:
    """The nodes' CPU seconds so far, summed."""
    total = 0.0
    for node in nodes:
        info = await node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def idle(nodes: Sequence[Redis], seconds: float) -> float:
    """The nodes' CPU seconds per second while nobody asks anything (the cluster's gossip, the
    servers' timers): subtracted from every measurement."""
    before, started = await cpu(nodes), time.perf_counter()
    await asyncio.sleep(seconds)
    return (await cpu(nodes) - before) / (time.perf_counter() - started)


async def per_call(nodes: Sequence[Redis], times: int, work: Callable[[], Awaitable[Any]],
                   idle_seconds: float) -> float:
    """Server CPU µs per call of `work`, over `times` calls, less the nodes' idle CPU (measured
    for `idle_seconds` first)."""
    background = await idle(nodes, idle_seconds)
    before, started = await cpu(nodes), time.perf_counter()
    for _ in range(times):
        await work()
    spent = await cpu(nodes) - before - background * (time.perf_counter() - started)
    return spent / times * 1e6


async def main(events: int, reads: int, idle_seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, private_redis() as url:
        path = Path(tmp) / "events.db"
        await (await open_store(f"sqlite+aiosqlite:///{path}", default_schema())).close()
        written = await asyncio.to_thread(write_sqlite, path, events)
        store = await open_store(f"sqlite+aiosqlite:///{path}", default_schema())
        cluster = LocalCluster(masters=3)
        single = Redis.from_url(url, decode_responses=True)
        try:
            cluster.start()
            redis = await cluster.client()
            masters = [Redis(host="127.0.0.1", port=p) for p in cluster.ports]
            keys = Keys("cost")
            rows: list[tuple[str, float, float]] = []

            one = await per_call([single], 1, lambda: Projector(
                store, single, keys, batch_size=5000).catch_up(), idle_seconds)
            spread = await per_call(masters, 1, lambda: ShardedProjector(
                store, redis, "cost", SHARDS, batch_size=5000).catch_up(), idle_seconds)
            rows.append(("projection, batches of 5 000 (per event)", one / written,
                         spread / written))

            model = ReadModel(single, keys)
            reader = ShardedReader(redis, "cost", SHARDS)
            at = written // 2

            async def nested_one() -> None:
                (location,) = await model.docs_at("location", [3], at)
                assert location is not None
                await model.docs_at("employee", location["employee_ids"], at)

            reads_of: dict[str, tuple[Callable[[], Awaitable[Any]],
                                      Callable[[], Awaitable[Any]]]] = {
                "location 3 and its 50 employees at P": (
                    nested_one, lambda: reader.location_with_staff(3, at)),
                "every location at P (20)": (
                    lambda: model.all_locations_at(at), lambda: reader.alive_at("location", at)),
                "first 50 employees at P (of 1 000)": (
                    lambda: model.employee_page_at(0, 50, at),
                    lambda: reader.employee_page_at(0, 50, at)),
                "the lowest checkpoint (P)": (model.checkpoint, reader.position),
            }
            for name, (today, sharded) in reads_of.items():
                rows.append((name, await per_call([single], reads, today, idle_seconds),
                             await per_call(masters, reads, sharded, idle_seconds)))
            for node in masters:
                await node.aclose()
            await redis.aclose()
        finally:
            cluster.stop()
            await single.aclose()
            await store.close()
    print(f"\n{written} events; server CPU µs (cluster: summed over 3 masters, {SHARDS} shards)")
    print(f"{'what':44} {'one node':>9} {'cluster':>9} {'ratio':>6}")
    for name, alone, sharded in rows:
        print(f"{name:44} {alone:9.1f} {sharded:9.1f} {sharded / alone:6.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.reads, args.idle_seconds))
