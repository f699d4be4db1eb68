"""A process reading a replica (REDIS_READ_URL) takes its waits from that replica's feed, and
follows it when it falls back (a replica resynchronised from a new primary that lost batches):
real redis-server primary and replica, the real composition root, change notices published on
the primary encoded as the projector encodes them (app/read_model/changes.py)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from app.bootstrap import bootstrap
from app.projections.documents import Change
from app.read_model import changes
from app.read_model.changes import Batch
from app.settings import Settings
from tests.harness.cluster import until
from tests.harness.replication import start_primary, start_replica, stopping


def notice(start: int, end: int, employee_id: int) -> bytes:
    """The change message of a batch (start, end] changing one employee's title at `end`."""
    change = Change(end, "UPDATED", "employee", employee_id,
                    {"id": employee_id, "job_title": f"T{end}"})
    return changes.encode(changes.Batch(start, end, [change], []), orjson.dumps)


async def test_waits_follow_the_replica_and_go_back_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    primary = start_primary(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary)
    prefix = f"feed-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'events.db'}", redis_url=primary.url,
        redis_read_url=replica.url, redis_prefix=prefix, var_dir=tmp_path / "var",
    )
    writer = Redis.from_url(primary.url, decode_responses=True)
    with stopping(replica, primary):
        async with bootstrap(settings, run_projector=False) as services:
            assert services.nodes.separate
            await until(lambda: services.hub.position is not None, "the feed subscribed", 10.0)
            channel = services.read_model.keys.changes_channel
            with services.hub.subscribe() as subscriber:
                # the projector (its notices, on the primary) reaches 5: the replica's feed says so
                await writer.publish(channel, notice(0, 5, 1))
                await until(lambda: services.waiter.position == 5, "the wait position 5", 10.0)
                assert await services.waiter.wait_for(5, 0.0)

                # the replica falls back to 3, and the projector projects (3, 4] again
                with caplog.at_level(logging.WARNING, logger="app.bootstrap"):
                    await writer.publish(channel, notice(3, 4, 2))
                    await until(lambda: services.waiter.position == 4, "the position 4", 10.0)
                assert "fell back from 5 to 4" in caplog.text
                assert not await services.waiter.wait_for(5, 0.0)  # 5 is no longer taken
                # the replica's position now comes back batch by batch, and the feed with it
                await writer.publish(channel, notice(4, 6, 3))
                await until(lambda: services.waiter.position == 6, "the position 6", 10.0)

                delivered: list[Batch] = list(subscriber.queue)
            # subscribers got each change once: (4, 5] and (3, 4] were not given twice
            assert [(b.from_position, b.position, [c.entity_id for c in b.changes])
                    for b in delivered] == [(0, 5, [1]), (5, 6, [3])]
    await writer.aclose()
