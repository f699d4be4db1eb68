"""A spike, not the service: the read model sharded over a Redis Cluster (docs/scaling.md).

- `LocalCluster`: N masters of Debian's redis-server with `--cluster-enabled yes` on free ports
  in a temporary directory, slots assigned by `redis-cli --cluster create`; stopped by pid.
- `shard_keys`: shard k of generation g lives under the hash tag `{base:g{g}:s{k}}`. It is
  today's layout (`app/read_model/layout.Keys`) with that tag as its prefix, so one shard's
  documents, histories, indexes, commit clock, parked set and checkpoint share one slot, and
  today's APPLY and LATEST_AT scripts run unchanged, one call per shard.
- `ShardedProjector`: per shard, the events after that shard's own checkpoint, applied by the
  pure projections (app/projections/batch.py) to that shard's documents only, written by APPLY
  conditional on that checkpoint, the change message SPUBLISHed on the shard's channel inside
  the same script. The projections change one document from its own previous state and the
  event, so each shard can be projected on its own.
- `ShardedReader`: scatter-gather reads answered at the lowest shard checkpoint, from the
  shards' time-travel histories, so an answer is one point in time however far apart the
  shards are.

What it leaves out is listed in docs/scaling.md ("What the spike does not do").
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from app.event_store.base import EventStore
from app.projections import batch as projection
from app.projections.documents import Doc, DocKey, Entity
from app.read_model.changes import Batch, of, parse
from app.read_model.layout import APPLY, LATEST_AT, Keys, apply_args, apply_keys, document, historic
from tests.harness.server import free_port

REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
START_SECONDS = 30.0


class LocalCluster:
    """`masters` redis-server processes forming one Redis Cluster (no replicas, no persistence)."""

    def __init__(self, masters: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cqrs-cluster-"))
        self.ports = [free_port() for _ in range(masters)]
        # the bus port must be given: the default (port + 10000) is past 65535 for high ports
        self.bus_ports = [free_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            node = self.dir / str(port)
            node.mkdir()
            with (node / "redis.log").open("wb") as log:
                self.processes.append(subprocess.Popen(
                    [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-port", str(bus),
                     "--cluster-config-file", str(node / "nodes.conf"),
                     "--dir", str(node), "--save", "", "--appendonly", "no"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        for port in self.ports:
            self._until(port, ("PING",), "PONG")
        created = subprocess.run(
            [str(REDIS_CLI), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}"
                               f"{created.stderr[-2000:]}")
        for port in self.ports:  # every node has heard of every slot's owner
            self._until(port, ("CLUSTER", "INFO"), "cluster_state:ok")

    def _until(self, port: int, command: tuple[str, ...], wanted: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            answer = subprocess.run([str(REDIS_CLI), "-p", str(port), *command],
                                    capture_output=True, text=True, timeout=10, check=False)
            if wanted in answer.stdout:
                return
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a cluster node exited: see {self.dir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {port} never answered {wanted!r} to {command}")
            time.sleep(0.05)  # polling interval while the node starts or gossips

    async def client(self) -> RedisCluster:
        """redis-py's cluster client, routing every command to the master of its slot (its
        slot map loaded: the sharded subscriber looks slots up before any command)."""
        redis = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports],
                             decode_responses=True)
        await redis.initialize()
        return redis

    def url(self, node: int = 0) -> str:
        """One node's URL, as an operator would put it in REDIS_URL."""
        return f"redis://127.0.0.1:{self.ports[node]}/0"

    def stop(self) -> None:
        """SIGTERM each node by its pid (SIGKILL if it lingers) and remove the directory."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def shard_keys(base: str, generation: int, shard: int) -> Keys:
    """Today's layout for one shard: every key under the hash tag `{base:g{generation}:s{shard}}`
    (the generation pointer APPLY declares is then the shard's own copy of it)."""
    return Keys(f"{{{base}:g{generation}:s{shard}}}")


def shard_of(key: DocKey, shards: int) -> int:
    """The shard that holds a document: a stable hash of its stream id (`location-7`)."""
    return zlib.crc32(f"{key[0]}-{key[1]}".encode()) % shards


def sharded_publish(args: list[Any]) -> list[Any]:
    """APPLY's ARGV with its PUBLISH turned into SPUBLISH: the shard's channel is in its slot,
    and a sharded message goes only to that slot's master and its replicas."""
    out = list(args)
    at = 4  # the writes start after the four fixed arguments
    while at < len(out):
        count = int(out[at])
        if out[at + 1] == "PUBLISH":
            out[at + 1] = "SPUBLISH"
        at += count + 1
    return out


class ShardedProjector:
    """The projector over `shards` shards of one generation; each shard keeps its checkpoint."""

    def __init__(self, store: EventStore, redis: RedisCluster, base: str, shards: int,
                 generation: int = 1, batch_size: int = 500) -> None:
        self.store = store
        self.redis = redis
        self.shards = shards
        self.keys = [shard_keys(base, generation, s) for s in range(shards)]
        self.batch_size = batch_size
        self._apply = redis.register_script(APPLY)

    async def checkpoints(self) -> list[int]:
        """Every shard's checkpoint (one GET per shard, sent to the shards' masters at once)."""
        raw = await asyncio.gather(*(self.redis.get(k.checkpoint) for k in self.keys))
        return [int(v or 0) for v in raw]

    async def catch_up(self, until: int | None = None, only: set[int] | None = None) -> None:
        """Apply every commit (ending at or before `until`) to every shard (or those `only`)."""
        while True:
            standing = await self.checkpoints()
            wanted = [s for s in range(self.shards) if only is None or s in only]
            low = min(standing[s] for s in wanted)
            events = await self.store.read_batch(low, self.batch_size)
            if until is not None:
                events = [e for e in events if e.commit_position <= until]
            if not events:
                return
            decoded = projection.decode(events)
            await asyncio.gather(*(self._apply_shard(s, standing[s], decoded) for s in wanted))

    async def _apply_shard(self, shard: int, checkpoint: int,
                           decoded: projection.Decoded) -> None:
        mine = [(e, d) for e, d in decoded if e.position > checkpoint]
        if not mine:
            return
        keys = self.keys[shard]
        touched = [k for k in projection.touched(mine) if shard_of(k, self.shards) == shard]
        raw = await self.redis.mget([keys.doc(k) for k in touched]) if touched else []
        before = {k: document(v) for k, v in zip(touched, raw, strict=True)}
        result = projection.apply(mine, before)
        if result.parked or result.erased:
            raise NotImplementedError("parking and erasure are not part of the spike")
        result.docs = {k: v for k, v in result.docs.items() if k in before}
        result.changes = [c for c in result.changes
                          if shard_of((c.entity, c.entity_id), self.shards) == shard]
        events = [e for e, _ in mine]
        published = of(checkpoint, result.changes, events)
        args = apply_args(keys, checkpoint, False, events, result, published, 0)
        applied = await self._apply(keys=apply_keys(keys), args=sharded_publish(args))
        if applied != 1:
            raise RuntimeError(f"shard {shard} moved under us: {applied}")


class ShardedReader:
    """Scatter-gather reads at one point in time: the lowest shard checkpoint."""

    def __init__(self, redis: RedisCluster, base: str, shards: int, generation: int = 1) -> None:
        self.redis = redis
        self.shards = shards
        self.keys = [shard_keys(base, generation, s) for s in range(shards)]
        self._latest_at = redis.register_script(LATEST_AT)

    async def position(self) -> int:
        """The newest position every shard has reached: the point answers are given at."""
        raw = await asyncio.gather(*(self.redis.get(k.checkpoint) for k in self.keys))
        return min(int(v or 0) for v in raw)

    async def docs_at(self, entity: Entity, ids: Sequence[int], position: int) -> list[Doc | None]:
        """Each entity's document right after commit `position`: one LATEST_AT per shard
        holding any of them (a script's keys must share one slot), the shards asked at once."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for i in ids:
            by_shard[shard_of((entity, i), self.shards)].append(i)
        found: dict[int, Doc | None] = {}

        async def ask(shard: int, members: list[int]) -> None:
            keys = [self.keys[shard].history((entity, i)) for i in members]
            raw = await self._latest_at(keys=keys, args=[position])
            found.update(zip(members, (historic(m) for m in raw), strict=True))

        await asyncio.gather(*(ask(s, m) for s, m in by_shard.items()))
        return [found[i] for i in ids]

    async def _alive_at(self, entity: Entity, shard: int, position: int) -> list[Doc]:
        """One shard's entities of a kind alive right after `position`, in id order."""
        raw = await self.redis.zrangebyscore(self.keys[shard].created(entity), "-inf", position)
        ids = sorted(int(i) for i in raw)
        if not ids:
            return []
        keys = [self.keys[shard].history((entity, i)) for i in ids]
        docs = [historic(m) for m in await self._latest_at(keys=keys, args=[position])]
        return [d for d in docs if d is not None]

    async def alive_at(self, entity: Entity, position: int) -> list[Doc]:
        """Every entity of a kind alive right after `position`, in id order: each shard's
        sorted answer, merged."""
        parts = await asyncio.gather(*(self._alive_at(entity, s, position)
                                       for s in range(self.shards)))
        return list(heapq.merge(*parts, key=lambda d: int(d["id"])))

    async def employee_page_at(self, after_id: int, first: int,
                               position: int) -> tuple[list[Doc], bool, int]:
        """Employees alive right after `position` with id > after_id: (page, has_next, total)."""
        alive = await self.alive_at("employee", position)
        rest = [d for d in alive if d["id"] > after_id]
        return rest[:first], len(rest) > first, len(alive)

    async def location_with_staff(self, location_id: int,
                                  position: int) -> tuple[Doc | None, list[Doc | None]]:
        """A location and its employees, both at `position` (the nested read of
        `location(id) { employees }`: its employees live on other shards)."""
        (location,) = await self.docs_at("location", [location_id], position)
        if location is None:
            return None, []
        return location, await self.docs_at("employee", location["employee_ids"], position)


class ShardFeed:
    """One subscriber of every shard's change channel (SSUBSCRIBE: each channel is read from
    its slot's master), and the position each shard has announced: a `minPosition` wait is
    over once the lowest of them has reached the position."""

    def __init__(self, redis: RedisCluster, keys: Sequence[Keys]) -> None:
        self.pubsub = redis.pubsub()
        self.channels = [k.changes_channel for k in keys]
        self.positions = dict.fromkeys(self.channels, 0)
        self.received: list[tuple[str, Batch]] = []

    async def open(self) -> None:
        for channel in self.channels:
            await self.pubsub.ssubscribe(channel)

    def low(self) -> int:
        return min(self.positions.values())

    async def wait_for(self, position: int, seconds: float = 10.0) -> bool:
        """Whether every shard announced `position` (or later) within `seconds`."""
        deadline = time.monotonic() + seconds
        while self.low() < position and time.monotonic() < deadline:
            message = await self.pubsub.get_sharded_message(ignore_subscribe_messages=True,
                                                            timeout=0.2)
            if message is not None:
                channel, batch = str(message["channel"]), parse(message["data"])
                self.received.append((channel, batch))
                self.positions[channel] = max(self.positions[channel], batch.position)
        return self.low() >= position

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
