"""The composition root: builds every component from Settings, starts and stops them in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.domain.schema import default_schema
from app.embedded_redis import EmbeddedValkey
from app.event_store.sqlalchemy import SqlEventStore
from app.observability import APPENDS, PROJECTED_POSITION
from app.projections.projector import Projector
from app.read_model.client import connect
from app.read_model.hub import Batch, ChangeHub
from app.read_model.keys import Keys
from app.read_model.pubsub import listen
from app.read_model.redis import ReadModel
from app.read_model.waiter import CheckpointWaiter
from app.service.handlers import CommandHandlers
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: SqlEventStore
    redis: Redis
    read_model: ReadModel
    waiter: CheckpointWaiter
    handlers: CommandHandlers
    projector: Projector
    hub: ChangeHub
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `work` in the background for as long as the services live."""
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


@asynccontextmanager
async def redis_url(settings: Settings) -> AsyncIterator[str]:
    """The configured Redis, or this checkout's embedded Valkey for as long as the block runs."""
    if settings.redis_url:
        yield settings.redis_url
        return
    embedded = EmbeddedValkey(settings.var_dir / "valkey")
    url = await asyncio.to_thread(embedded.start)
    try:
        yield url
    finally:
        await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def bootstrap(
    settings: Settings, run_projector: bool | None = None, follow: bool = True
) -> AsyncIterator[Services]:
    """Everything wired and running; `follow` starts the background projector/listener tasks."""
    run_projector = settings.run_projector if run_projector is None else run_projector
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(redis_url(settings))
        sqlite_file = settings.sqlite_path()
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        store = await SqlEventStore.open(
            settings.database_url, default_schema(), direct=settings.sqlite_direct
        )
        stack.push_async_callback(store.close)
        redis = connect(url, health_check_interval=10)
        stack.push_async_callback(redis.aclose)
        keys = Keys(settings.redis_prefix)
        read_model = ReadModel(redis, keys)
        waiter = CheckpointWaiter(read_model)
        projector = Projector(
            store, redis, keys, settings.projector_batch_size, settings.projector_poll_seconds
        )
        handlers = CommandHandlers(
            store, default_schema(), max_retries=settings.command_max_retries,
            snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache_size,
        )
        hub = ChangeHub(settings.subscription_queue_size)
        services = Services(settings, store, redis, read_model, waiter, handlers, projector, hub)
        stack.push_async_callback(_cancel_all, services)
        if follow:
            _wire(services, run_projector)
        yield services


def _wire(services: Services, run_projector: bool) -> None:
    keys = services.read_model.keys
    projector, waiter = services.projector, services.waiter

    async def on_changes(message: str) -> None:
        batch = Batch.parse(message)
        services.hub.publish(batch)
        await waiter.advance(batch.position)

    async def resync() -> None:
        """(Re)subscribed: anything published while we were away is a gap the hub must see."""
        checkpoint = await services.read_model.checkpoint()
        known = services.hub.position
        if known is not None and checkpoint > known:
            services.hub.publish(Batch(checkpoint, checkpoint, [], []))
        elif known is None:
            services.hub.position = checkpoint
        await waiter.advance(checkpoint)

    async def projected(position: int) -> None:
        PROJECTED_POSITION.set(position)
        await waiter.advance(position)

    head = {"appended": 0, "announced": 0}
    announcing: list[asyncio.Task[Any]] = []

    async def announce() -> None:
        """One announcement per burst: a group commit calls `appended` once per command."""
        while head["appended"] > head["announced"]:
            position = head["appended"]
            await _announce(services, position, notify=not run_projector)
            head["announced"] = position

    def appended(position: int) -> None:
        APPENDS.inc()
        if run_projector:
            projector.wake(position)
        head["appended"] = max(head["appended"], position)
        if not announcing or announcing[0].done():
            announcing[:] = [services.spawn(announce(), "announce")]

    services.store.on_append(appended)
    services.spawn(listen(services.redis, keys.changes_channel, on_changes, resync), "changes")
    if run_projector:
        projector.on_checkpoint(projected)
        services.spawn(projector.run(), "projector")


async def run_projector_alone(services: Services) -> None:
    """The `project` command: follow the store, woken by other processes' append notices."""
    keys = services.read_model.keys

    async def wake(_message: str) -> None:
        services.projector.wake()

    async def catch_up() -> None:
        services.projector.wake()

    services.spawn(listen(services.redis, keys.appended_channel, wake, catch_up), "appended")
    await services.projector.run()


async def _announce(services: Services, position: int, notify: bool) -> None:
    """Tell Redis the store's new head; wake a projector in another process if there is one.

    Best effort: without Redis the projector finds the events by polling once Redis is back.
    """
    try:
        await services.read_model.note_head(position)
        if notify:
            await services.redis.publish(services.read_model.keys.appended_channel, position)
    except (RedisError, OSError) as error:
        log.warning("could not announce position %d: %s", position, error)


async def _cancel_all(services: Services) -> None:
    tasks = list(services.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
