"""The primary Redis's CPU per query, with and without a replica serving the reads.

A primary redis-server and its replica (Debian's, tests/harness/replication.py), and two API
processes (`python -m app serve`) on the same history (bench/http.py: 20 locations × 50
employees): "alone" reads the primary (REDIS_URL; it runs the projector), "with a replica" reads
REDIS_READ_URL (`--no-projector`). wrk (1 thread, 16 connections) sends to each in turn
  employees(locationId, first: 50, atPosition) { … }    time travel: every answer from Redis
  location(id) { … employees { … } }                    current: mostly the process's cache
and the primary's own CPU accounting (INFO cpu: used_cpu_user + used_cpu_sys) gives its CPU per
query under each load. Figure: the primary's µs per query with a replica / alone (lower is
better); the replica's µs per query is in the note, and the primary's idle rate (its cron, the
replication link, the projector's lease; measured before each round, with no load), which is
what remains of its CPU per query once a replica takes the reads. Current-state queries are
answered mostly from each API process's document cache, so they cost Redis little either way.

    python -m bench.replicas [--quick] [--repeats N]
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import Figure, Options, cli, median, progress, unique_prefix
from bench.http import HISTORY_EVENTS, LOCATIONS, body, check, prepared_history, wrk
from bench.server import Server, running
from tests.harness.cluster import RedisServer
from tests.harness.replication import cpu_seconds, start_primary, start_replica, stopping

FIELDS = "id firstName lastName jobTitle locationId version"
TIME_TRAVEL = body(f"query($id: Int!) {{ employees(locationId: $id, first: 50, atPosition: "
                   f"{HISTORY_EVENTS // 2}) {{ totalCount edges {{ node {{ {FIELDS} }} }} }} }}",
                   id="__ID__")
CURRENT = body(f"query($id: Int!) {{ location(id: $id) {{ id city employeeCount "
               f"employees {{ {FIELDS} }} }} }}", id="__ID__")
CONNECTIONS = 16
CAUGHT_UP = body("query($p: Int) { locations(minPosition: $p) { id } }", p=HISTORY_EVENTS)


def run(options: Options) -> list[Figure]:
    seconds = 1 if options.quick else 5
    progress(f"replicas: wrk {CONNECTIONS} connections, {seconds} s per load, "
             f"{options.repeats} repeats")
    # per query kind and setting: (primary µs, replica µs) per query, one pair per repeat
    spent: dict[tuple[str, str], list[tuple[float, float]]] = {}
    idle: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, _servers(Path(tmp)) as (primary, replica, apis):
        for _ in range(options.repeats):  # interleaved: drift in the machine's load hits all alike
            idle.append(_idle(seconds, primary, replica))
            for kind, query in (("time travel", TIME_TRAVEL), ("current", CURRENT)):
                for setting, api in apis.items():
                    spent.setdefault((kind, setting), []).append(
                        _load(api, query, seconds, primary, replica))
    idle_ms = median([p for p, _ in idle]) * 1e3

    def primary_us(kind: str, setting: str) -> float:
        return median([p for p, _ in spent[(kind, setting)]])

    def replica_us(kind: str) -> float:
        return median([r for _, r in spent[(kind, "with a replica")]])

    return [
        Figure("replicas", f"primary Redis CPU per {kind} query, reads on a replica",
               primary_us(kind, "with a replica"), "µs", "reads on the primary",
               primary_us(kind, "alone"), higher_is_better=False,
               note=f"the replica: {replica_us(kind):.1f} µs per query; the primary idle: "
                    f"{idle_ms:.1f} ms CPU/s")
        for kind in ("time travel", "current")
    ]


def _idle(seconds: float, primary: RedisServer, replica: RedisServer) -> tuple[float, float]:
    """The primary's and the replica's CPU seconds per second with no query load."""
    before, started = (cpu_seconds(primary), cpu_seconds(replica)), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return ((cpu_seconds(primary) - before[0]) / elapsed,
            (cpu_seconds(replica) - before[1]) / elapsed)


def _load(api: Server, query: str, seconds: float, primary: RedisServer,
          replica: RedisServer) -> tuple[float, float]:
    """wrk against `api`; the primary's and the replica's CPU µs per query meanwhile."""
    before = cpu_seconds(primary), cpu_seconds(replica)
    load = wrk(api.url, query, LOCATIONS, seconds, CONNECTIONS)
    after = cpu_seconds(primary), cpu_seconds(replica)
    queries = load.requests_per_second * load.seconds
    if load.errors or not queries:
        raise RuntimeError(f"{api.url}: {load.errors} errors of {queries:.0f} queries")
    return ((after[0] - before[0]) / queries * 1e6, (after[1] - before[1]) / queries * 1e6)


@contextlib.contextmanager
def _servers(tmp: Path) -> Iterator[tuple[RedisServer, RedisServer, dict[str, Server]]]:
    """The two Redis servers and the two API processes, the read model caught up on both."""
    primary = start_primary(tmp / "primary")
    with stopping(primary):
        replica = start_replica(tmp / "replica", primary)
        env = {"REDIS_URL": primary.url, "REDIS_PREFIX": unique_prefix("replicas")}
        history = prepared_history(HISTORY_EVENTS)
        with stopping(replica), running(env, prepare=history) as alone:  # type: ignore[arg-type]
            check(alone.url, CAUGHT_UP)
            with running({**env, "REDIS_READ_URL": replica.url}, ("--no-projector",),
                         prepare=history) as beside:  # type: ignore[arg-type]
                check(beside.url, CAUGHT_UP)
                for api in (alone, beside):
                    check(api.url, TIME_TRAVEL)
                    check(api.url, CURRENT)
                yield primary, replica, {"alone": alone, "with a replica": beside}


cli(__name__, run, __doc__)
