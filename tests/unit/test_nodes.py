"""The rules that keep a process on one Redis node and never early, alone (with real servers:
tests/e2e/test_replicas.py)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    ResponseError,
)

from app.read_model.hub import ChangeHub
from app.read_model.layout import Keys
from app.read_model.nodes import choose, open_nodes, sentinel_addresses
from app.read_model.redis import ReadModel
from app.read_model.refusals import CLUSTER, READ_ONLY, RefusalLog, refusal
from app.read_model.waiter import CheckpointWaiter
from app.settings import Settings
from tests.harness.projection_support import batch

REPLICAS = "redis://a:6379/0, redis://b:6379/0,redis://c:6379/0"


def test_each_process_keeps_to_one_replica_and_processes_spread_over_them() -> None:
    assert choose(REPLICAS, pid=41) == choose(REPLICAS, pid=41)
    assert {choose(REPLICAS, pid=pid) for pid in range(100)} == {
        "redis://a:6379/0", "redis://b:6379/0", "redis://c:6379/0"}
    with pytest.raises(ValueError, match="names no URL"):
        choose(" , ")


def test_sentinel_addresses_are_host_port_pairs_or_a_clear_error() -> None:
    assert sentinel_addresses("10.0.0.1:26379, sentinel-b:26380") == [
        ("10.0.0.1", 26379), ("sentinel-b", 26380)]
    for wrong in ("10.0.0.1", "host:port", "a:1,,b:2", ":26379"):
        with pytest.raises(ValueError, match="is not host:port"):
            sentinel_addresses(wrong)


async def test_a_read_url_separates_reads_from_the_primary_unless_it_is_the_primary() -> None:
    apart = open_nodes(Settings(redis_read_url="redis://replica:6379/0"), "redis://primary:6379/0")
    same = open_nodes(Settings(redis_read_url="redis://primary:6379/0"), "redis://primary:6379/0")
    alone = open_nodes(Settings(), "redis://primary:6379/0")
    try:
        assert apart.separate and apart.reader is not apart.primary
        assert not same.separate and not alone.separate and alone.reader is alone.primary
    finally:
        for nodes in (apart, same, alone):
            await nodes.aclose()


async def test_with_sentinels_redis_url_gives_only_credentials_database_and_tls() -> None:
    sentinels = Settings(redis_sentinels="127.0.0.1:26379", redis_sentinel_service="orders")
    plain = open_nodes(sentinels, "redis://cqrs:secret@ignored-host:7000/3")
    tls = open_nodes(sentinels, "rediss://cqrs:secret@ignored-host:7000/0")
    try:
        for client in (plain.primary, plain.reader):
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("cqrs", "secret", 3)
            assert "host" not in kwargs and "port" not in kwargs  # Sentinel names the node
            assert issubclass(client.connection_pool.connection_class, SentinelManagedConnection)
        assert plain.separate and plain.primary is not plain.reader
        assert tls.primary.connection_pool.connection_class is SentinelManagedSSLConnection
    finally:
        await plain.aclose()
        await tls.aclose()


def test_the_hub_gives_nothing_twice_when_the_feed_replays_from_further_back() -> None:
    hub = ChangeHub()
    hub.position = 10
    with hub.subscribe() as subscriber:
        hub.publish(batch(10, 12, (11, 1, "A"), (12, 2, "B")))
        # the node fell back to 11 and the projector applied (11, 14] again: 12 is not repeated
        hub.publish(batch(11, 14, (12, 2, "B"), (14, 3, "C")))
        got = [(b.from_position, b.position, [c.position for c in b.changes])
               for b in subscriber.queue]
    assert got == [(10, 12, [11, 12]), (12, 14, [14])]
    assert subscriber.closed is None


async def test_a_restart_lowers_the_wait_position_to_the_node_read() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0")  # never asked: every wait is satisfied
    waiter = CheckpointWaiter(ReadModel(client, Keys("unit")))
    await waiter.advance(20)
    await waiter.restart(12)  # another replica, further behind
    assert waiter.position == 12
    assert not await waiter.wait_for(15, 0.0)  # 15 is no longer taken for granted
    assert await waiter.wait_for(12, 0.0)
    await waiter.restart(30)
    assert waiter.position == 30
    await client.aclose()


def test_refusals_are_named_and_logged_once_per_state(caplog: pytest.LogCaptureFixture) -> None:
    assert refusal(MovedError("3999 127.0.0.1:7001")) == CLUSTER
    assert refusal(ClusterDownError("CLUSTERDOWN Hash slot not served")) == CLUSTER
    assert refusal(ReadOnlyError("You can't write against a read only replica.")) == READ_ONLY
    assert refusal(ResponseError("Error running script: READONLY You can't write")) == READ_ONLY
    assert refusal(ConnectionError("Connection refused")) is None
    refusals = RefusalLog("listener")
    with caplog.at_level("INFO", logger="app.read_model.refusals"):
        for _ in range(5):
            refusals.saw(MovedError("3999 127.0.0.1:7001"))
        refusals.saw(ReadOnlyError("READONLY"))
        refusals.cleared()
        refusals.cleared()
    assert [(r.levelname, r.getMessage()[:40]) for r in caplog.records] == [
        ("ERROR", "listener: Redis answers as a Redis Clust"),
        ("ERROR", "listener: Redis refuses writes (ReadOnly"),
        ("INFO", "listener: Redis answers again"),
    ]
