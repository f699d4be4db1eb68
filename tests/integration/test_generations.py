"""Blue/green rebuilds, damage detection and the projector's leader lease, on real Redis/Valkey.

Each scenario runs the real `ProjectionRunner` (the code `serve` and `project` run) in-process
against a real event store and server, and ends by comparing the active generation key for key
with an uninterrupted projection of the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from app.event_store.base import EventStore
from app.projector.generations import Generations
from app.projector.leader import Lease
from app.projector.runner import ProjectionRunner
from app.read_model.layout import RENEW_LEASE, Keys
from app.read_model.redis import ReadModel
from tests.harness.projection_support import (
    command_handlers,
    delete_all,
    dump,
    project_fully,
    workload,
)
from tests.harness.replication import DelayProxy, start_primary, stopping, sync_client

SECONDS = 30.0  # bound on every wait; reaching it fails the test
GRACE = 0.3


@pytest.fixture
async def reference(redis: Redis, keys: Keys) -> AsyncIterator[Keys]:
    spare = Keys(f"{keys.base}-reference")
    yield spare
    await delete_all(redis, spare)


def runner_for(
    store: EventStore, redis: Redis, keys: Keys, lease: float = 1.0
) -> ProjectionRunner:
    generations = Generations(store, redis, keys, batch_size=50, grace_seconds=GRACE)
    return ProjectionRunner(store, redis, keys, generations, Lease(redis, keys.leader, lease),
                            batch_size=50, poll_interval=0.05, audit_every=0.1)


@contextlib.asynccontextmanager
async def running(runner: ProjectionRunner) -> AsyncIterator[asyncio.Task[None]]:
    await runner.prepare()
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.close()


async def active(redis: Redis, keys: Keys) -> tuple[int, int]:
    """(generation, its checkpoint), (0, 0) while there is none."""
    pointer = await redis.get(keys.generation_pointer)
    if pointer is None:
        return 0, 0
    return int(pointer), int(await redis.get(keys.at(int(pointer)).checkpoint) or 0)


async def settled(redis: Redis, keys: Keys, store: EventStore) -> int:
    """Wait until the active generation holds the whole log and no rebuild runs; its number."""
    head = await store.head_position()
    async with asyncio.timeout(SECONDS):
        while True:
            generation, position = await active(redis, keys)
            if position == head and not await redis.exists(keys.rebuilding):
                return generation
            await asyncio.sleep(0.01)


async def assert_equals_a_fresh_projection(
    store: EventStore, redis: Redis, keys: Keys, reference: Keys
) -> int:
    generation = await settled(redis, keys, store)
    await project_fully(store, redis, reference)
    assert await dump(redis, keys.at(generation)) == await dump(redis, reference)
    return generation


async def drained(pubsub: PubSub) -> list[dict[str, Any]]:
    """Every message received so far (until none came for half a second)."""
    messages = []
    quiet = asyncio.get_running_loop().time() + 0.5
    while asyncio.get_running_loop().time() < quiet:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            messages.append(json.loads(message["data"]))
            quiet = asyncio.get_running_loop().time() + 0.5
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    return messages


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll `condition` until it holds (at most SECONDS)."""
    async with asyncio.timeout(SECONDS):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.005)


async def generation_keys(redis: Redis, keys: Keys, generation: int) -> list[str]:
    return [k async for k in redis.scan_iter(match=keys.at(generation).pattern(), count=1000)]


async def test_a_rebuild_beside_the_live_projector_switches_without_flooding_subscribers(
    store: EventStore, redis: Redis, keys: Keys, reference: Keys
) -> None:
    # given a live read model over 300 events, a subscriber to its changes, and writes going on
    handlers = command_handlers(store)
    company = await workload(handlers, seed=11, events=300)
    runner = runner_for(store, redis, keys)
    async with running(runner):
        old = await settled(redis, keys, store)
        subscribed_at = await store.head_position()
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.changes_channel)
        writing = asyncio.create_task(workload(handlers, seed=12, events=600, company=company))
        old_model = ReadModel(redis, keys.at(old))
        reported: list[Any] = []
        done = asyncio.Event()

        async def query_meanwhile() -> list[int]:
            """Queries keep answering from the old generation until the switch."""
            seen = []
            while not done.is_set():
                seen.append(len(await old_model.all_locations()))
                await asyncio.sleep(0.005)
            return seen

        # when the whole log is rebuilt into a new generation while the live one keeps moving
        querying = asyncio.create_task(query_meanwhile())
        new, retired = await runner.generations.rebuild("test", reported.append)
        done.set()
        answers = await querying
        await writing
        generation = await assert_equals_a_fresh_projection(store, redis, keys, reference)

        # then queries were switched to it, and the old generation is deleted after the grace
        assert (retired, generation) == (old, new) and new != old
        assert reported and reported[-1].position >= subscribed_at
        assert answers and set(answers) == {4}
        await runner.generations.drop_later(old)
        assert await generation_keys(redis, keys, old) == []

        # and subscribers saw one switch notice among the live batches: no gap, no history
        messages = await drained(pubsub)
    switches = [m for m in messages if "generation" in m]
    assert [(m["generation"], m["changes"]) for m in switches] == [(new, [])]
    assert messages[0]["from"] == subscribed_at
    for previous, following in itertools.pairwise(messages):
        assert following["from"] == previous["position"]
    changed = [(c["position"], c["entity"], c["id"]) for m in messages for c in m["changes"]]
    assert len(changed) == len(set(changed)) and all(p > subscribed_at for p, *_ in changed)


async def test_a_flushed_read_model_is_rebuilt_by_the_leader_and_reported(
    store: EventStore, redis: Redis, keys: Keys, reference: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a live read model over 400 events
    await workload(command_handlers(store), seed=21, events=400)
    runner = runner_for(store, redis, keys)
    async with running(runner):
        await settled(redis, keys, store)

        # when every key of it vanishes (FLUSHALL, a replaced server)
        with caplog.at_level(logging.WARNING, logger="app.projections"):
            await delete_all(redis, keys)
            await assert_equals_a_fresh_projection(store, redis, keys, reference)

    # then the leader rebuilt it by itself (numbering restarts: the counter went too), and said why
    assert any("rebuilding the read model" in r.getMessage()
               and ("missing" in r.getMessage() or "gone" in r.getMessage())
               for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_the_audit_notices_lost_keys_and_rebuilds(
    store: EventStore, redis: Redis, keys: Keys, reference: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a live read model
    await workload(command_handlers(store), seed=31, events=200)
    runner = runner_for(store, redis, keys)
    async with running(runner):
        before = await settled(redis, keys, store)

        # when some of its keys are evicted while its checkpoint and pointer stay
        with caplog.at_level(logging.WARNING, logger="app.projections"):
            await redis.delete(keys.at(before).locations, keys.at(before).location(1))

            async def replaced() -> bool:
                return (await active(redis, keys))[0] != before

            await until(replaced)
            after = await assert_equals_a_fresh_projection(store, redis, keys, reference)

    # then the audit caught it and the read model was rebuilt whole
    assert after != before
    assert any("live locations but" in r.getMessage() for r in caplog.records)


async def test_projection_status_reports_a_rebuild_while_it_runs(
    store: EventStore, redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    await workload(command_handlers(store), seed=41, events=300)
    runner = runner_for(store, redis, keys)
    await runner.prepare()
    model = ReadModel(redis, keys.at(1))
    # the rebuild is held at its first read of the store, so it is surely running when looked at
    gate, read_batch = asyncio.Event(), store.read_batch

    async def held(after: int, limit: int) -> list[Any]:
        await gate.wait()
        return await read_batch(after, limit)

    monkeypatch.setattr(store, "read_batch", held)
    rebuild = asyncio.create_task(runner.generations.rebuild("test"))

    async def started() -> bool:
        return bool(await redis.exists(keys.rebuilding))

    await until(started)
    assert await model.rebuilding()
    status = json.loads(str(await redis.get(keys.rebuilding)))
    assert status["generation"] == 2 and status["head"] == await store.head_position()
    gate.set()
    await rebuild
    assert not await model.rebuilding()
    await model.follow_pointer()
    assert model.keys.generation == 2


def leading(runner: ProjectionRunner) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return runner.leading
    return check


async def test_exactly_one_runner_leads_and_a_standby_takes_over_when_it_stops(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    first, second = runner_for(store, redis, keys), runner_for(store, redis, keys)
    async with running(first):
        await until(leading(first))
        async with running(second):
            await asyncio.sleep(1.5)  # longer than the lease: the holder renewed it
            assert (first.leading, second.leading) == (True, False)
            assert await redis.get(keys.leader) == first.lease.token
        # the leader stopped cleanly (released the lease); a standby would now take it at once
    assert await redis.get(keys.leader) is None


async def test_a_standby_takes_the_lease_of_a_dead_holder_once_it_expires(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    # given a lease held by a process that died (it exists, but nobody renews it)
    await redis.set(keys.leader, "elsewhere:4242:dead", px=1000)
    standby = runner_for(store, redis, keys, lease=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(standby):
        await until(leading(standby))
        took = loop.time() - started
        assert await redis.get(keys.leader) == standby.lease.token
    # then it led as soon as the dead holder's lease ran out (1 s), not before
    assert 0.8 <= took < 2.5, took


async def test_a_lease_whose_renewals_are_slow_but_arrive_is_kept(tmp_path: Path) -> None:
    # given a lease of 1.5 s held through a link that delays every reply by 0.6 s: longer than
    # a renewal is waited for (0.5 s), shorter than the lease
    primary = start_primary(tmp_path / "primary")
    with stopping(primary), DelayProxy(primary.port, 0.6) as slow:
        sync_client(primary.port).script_load(RENEW_LEASE)  # as in a server that renewed before
        client = Redis(port=slow.port, decode_responses=True)
        lease = Lease(client, "lease-under-test", ttl=1.5)
        await lease.acquire()
        try:
            # when it is held for several lease periods
            async with lease.held() as lost:
                await asyncio.sleep(5.0)
                # then Redis, asked again, still has it as ours: it is never taken as lost
                assert not lost.is_set()
                assert sync_client(primary.port).get("lease-under-test") == lease.token
        finally:
            await client.aclose()
