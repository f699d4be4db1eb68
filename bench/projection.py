"""Projection rebuild: SQLite event store → Redis read model, against raw pipelined writes.

A history of restaurants (bench/history.py: locations, hires, title changes, swaps) is
bulk-written into a fresh SQLite store; then `python -m app rebuild`'s code rebuilds the read
model into a fresh key prefix (`Generations.rebuild`: batches of BATCH events, each one
conditional MULTI/EXEC, no PUBLISH until the one switch notice). Floor: every key and value
the projection left in Redis (documents, indexes, history, checkpoint), written again under
another prefix by raw redis-py pipelines (no transaction, 10 000 commands per round trip), timed
the same way, and expressed as events/s of the same history.
Goal: ≥ 0.3× the floor; also reported: events/s (aim ≥ 30 000/s).

    python -m bench.projection [--quick] [--repeats N] [--events N] [--redis-url URL]
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app.domain.schema import default_schema
from app.event_store import open_store
from app.projector.generations import Generations
from app.read_model.client import connect
from app.read_model.layout import Keys
from app.runtime import collector_paused, settle_heap
from app.settings import Settings
from bench.common import (
    Figure,
    Options,
    Stopwatch,
    drop_prefix,
    median,
    progress,
    redis_server,
    unique_prefix,
)
from bench.history import write_sqlite

BATCH = 5000
PIPELINE = 10_000


async def rebuild(db: Path, redis_url: str, prefix: str) -> tuple[float, int]:
    """(seconds to catch up, events) for a fresh prefix."""
    store = await open_store(f"sqlite+aiosqlite:///{db}", default_schema())
    redis = connect(redis_url)  # the client the service uses
    try:
        generations = Generations(store, redis, Keys(prefix), batch_size=BATCH)
        with Stopwatch() as watch, collector_paused():  # as `python -m app rebuild` does
            generation, _ = await generations.rebuild("bench")
        return watch.seconds, int(await redis.get(Keys(prefix).at(generation).checkpoint) or 0)
    finally:
        await redis.aclose()
        await store.close()


async def dump(redis_url: str, prefix: str) -> list[tuple[str, str, Any]]:
    """Every key of a prefix with its type and value."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=10_000)]
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            types = await pipe.execute()
        async with redis.pipeline(transaction=False) as pipe:
            for key, kind in zip(keys, types, strict=True):
                if kind == "string":
                    pipe.get(key)
                else:
                    pipe.zrange(key, 0, -1, withscores=True)
            values = await pipe.execute()
        return [(k, t, v) for k, t, v in zip(keys, types, values, strict=True)]
    finally:
        await redis.aclose()


async def raw_write(redis_url: str, content: list[tuple[str, str, Any]], old: str,
                    new: str) -> float:
    """Seconds to write the same keys and values under `new` with raw pipelines."""
    commands: list[tuple[str, str, Any]] = []
    for key, kind, value in content:
        renamed = new + key[len(old):]
        if kind == "string":
            commands.append(("set", renamed, value))
        else:
            for start in range(0, len(value), 1000):  # ZADD in chunks of 1 000 members
                commands.append(("zadd", renamed, dict(value[start:start + 1000])))
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        with Stopwatch() as watch:
            for start in range(0, len(commands), PIPELINE):
                async with redis.pipeline(transaction=False) as pipe:
                    for op, key, value in commands[start:start + PIPELINE]:
                        if op == "set":
                            pipe.set(key, value)
                        else:
                            pipe.zadd(key, value)
                    await pipe.execute()
        return watch.seconds
    finally:
        await redis.aclose()


def run(options: Options, events: int | None = None) -> list[Figure]:
    size = events or (3000 if options.quick else 200_000)
    progress(f"projection: {size:,} events, {options.repeats} repeats")
    ours: list[float] = []
    floor: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, redis_server(options.redis_url) as url:
        db = Path(tmp) / "events.db"
        asyncio.run(_create(db))
        written = write_sqlite(db, size)
        settle_heap(Settings().gc_threshold)  # once, as `python -m app rebuild` does
        for _ in range(options.repeats):
            prefix, copy = unique_prefix("projection"), unique_prefix("raw")
            try:
                seconds, applied = asyncio.run(rebuild(db, url, prefix))
                assert applied == written, (applied, written)
                content = asyncio.run(dump(url, prefix))
                floor_seconds = asyncio.run(raw_write(url, content, prefix, copy))
            finally:
                asyncio.run(drop_prefix(url, prefix))
                asyncio.run(drop_prefix(url, copy))
            ours.append(written / seconds)
            floor.append(written / floor_seconds)
    return [Figure(
        "projection", f"rebuild {written:,} events SQLite → Redis", median(ours), "events/s",
        "raw redis-py pipelines, same keys+values", median(floor), 0.3,
        note="aim ≥ 30 000 events/s",
    )]


async def _create(db: Path) -> None:
    """The store's tables, created by the store itself."""
    await (await open_store(f"sqlite+aiosqlite:///{db}", default_schema())).close()


def main() -> None:
    from bench.common import options as parse_options
    from bench.common import parser, table

    cli_parser = parser(__doc__.strip().splitlines()[0])
    cli_parser.add_argument("--events", type=int, default=None)
    args = cli_parser.parse_args()
    print(table(run(parse_options(args), args.events)))


if __name__ == "__main__":
    main()
