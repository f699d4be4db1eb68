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
from app.embedded_redis import is_embedded, redis_url
from app.event_store import migrate, open_store, verify_schema
from app.event_store.base import EventStore
from app.event_store.migrations import Revisions
from app.observability import APPENDS, PROJECTED_POSITION
from app.privacy import rewrite_append_only_file
from app.private_files import private_dir
from app.projector.generations import Generations
from app.projector.leader import Lease
from app.projector.loop import Projector
from app.projector.runner import ProjectionRunner
from app.read_model import changes
from app.read_model.cache import DocumentCache
from app.read_model.changes import Batch
from app.read_model.hub import ChangeHub
from app.read_model.layout import Keys
from app.read_model.nodes import Nodes, open_nodes
from app.read_model.pubsub import listen
from app.read_model.redis import ReadModel
from app.read_model.refusals import RefusalLog
from app.read_model.waiter import CheckpointWaiter
from app.service.handlers import CommandHandlers
from app.service.idempotency import prune_forever
from app.settings import Settings

log = logging.getLogger(__name__)

HEAD_EVERY = 0.1
"""Seconds the head in Redis (projection status, lag) may trail this process's appends while its
own projector leads: a payload never waits for it (the head read is at least the checkpoint)."""


@dataclass
class Services:
    settings: Settings
    store: EventStore
    redis: Redis
    read_model: ReadModel
    waiter: CheckpointWaiter
    handlers: CommandHandlers
    runner: ProjectionRunner
    hub: ChangeHub
    nodes: Nodes
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def projector(self) -> Projector:
        """The projector of the generation queries read (run by `runner` while leading)."""
        return self.runner.projector

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
async def bootstrap(
    settings: Settings, run_projector: bool | None = None, follow: bool = True
) -> AsyncIterator[Services]:
    """Everything wired and running; `follow` starts the background projector/listener tasks."""
    run_projector = settings.run_projector if run_projector is None else run_projector
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(redis_url(settings))
        _store_dir(settings)
        store = await open_store(
            settings.database_url, default_schema(), direct=settings.sqlite_direct
        )
        stack.push_async_callback(store.close)
        nodes = open_nodes(settings, url, health_check_interval=10)
        stack.push_async_callback(nodes.aclose)
        redis = nodes.primary  # the projector's, its lease's and the append notices'
        keys = Keys(settings.redis_prefix)
        runner = ProjectionRunner(
            store, redis, keys,
            Generations(store, redis, keys, settings.projector_batch_size,
                        settings.rebuild_grace_seconds),
            Lease(redis, keys.leader, settings.leader_lease_seconds),
            settings.projector_batch_size, settings.projector_poll_seconds,
            settings.damage_check_seconds,
        )
        stack.push_async_callback(runner.close)
        # our own file: keep it clean
        if bool(url) and await asyncio.to_thread(is_embedded, settings, url):
            runner.on_erasure(lambda: rewrite_append_only_file(redis))
        try:
            generation = await runner.prepare()
        except (RedisError, OSError) as error:  # the listener follows the pointer once it is up
            if not RefusalLog("start-up").saw(error):
                log.warning("read model unavailable at start-up: %s", error)
            generation = 0
        size = settings.document_cache_size
        cache = DocumentCache(size) if size else None
        read_model = ReadModel(nodes.reader, keys.at(generation), cache, primary=redis)
        waiter = CheckpointWaiter(read_model)
        handlers = CommandHandlers(
            store, default_schema(), max_retries=settings.command_max_retries,
            snapshot_every=settings.snapshot_every, cache_size=settings.aggregate_cache_size,
        )
        hub = ChangeHub(settings.subscription_queue_size)
        services = Services(settings, store, redis, read_model, waiter, handlers, runner, hub,
                            nodes)
        stack.push_async_callback(_cancel_all, services)
        if follow:
            _wire(services, run_projector)
        yield services


def _store_dir(settings: Settings) -> None:
    """The SQLite file's directory, made (mode 0700) when missing."""
    sqlite_file = settings.sqlite_path()
    if sqlite_file is not None:
        private_dir(sqlite_file.parent)


async def migrate_store(settings: Settings) -> Revisions:
    """The store's schema upgraded to the newest revision (`migrate`), the SQLite file's
    directory made first."""
    _store_dir(settings)
    return await migrate(settings.database_url)


async def ready_schema(settings: Settings) -> None:
    """Before a server starts its workers: SQLite migrated (once, rather than by each worker),
    PostgreSQL checked; SchemaError says what is wrong."""
    if settings.database_url.startswith("sqlite"):
        await migrate_store(settings)
    else:
        await verify_schema(settings.database_url)


def _wire(services: Services, run_projector: bool) -> None:
    keys = services.read_model.keys
    runner, waiter = services.runner, services.waiter

    cache = services.read_model.cache
    # Reading a replica, waits follow only that replica (its feed and its checkpoint): the
    # primary's positions, as this process's own projector reports them, come earlier.
    separate = services.nodes.separate
    fed: dict[str, int] = {}  # the position of the last batch this subscription brought

    async def on_changes(message: str) -> None:
        position = None if separate else changes.peek(message)
        if position is not None and _delivered(position):  # by this process's projector
            await waiter.advance(position)
            return
        batch = changes.parse(message)
        # Batches of one subscription follow each other; one starting before the last ended
        # was projected again: the node fell back (a replica resynchronised after a failover).
        if separate and batch.from_position < fed.get("last", batch.from_position):
            await _fell_back(services, batch.position)
        fed["last"] = batch.position
        if batch.generation is not None:  # a rebuild switched queries to a new generation
            services.read_model.use_generation(batch.generation)
            if cache is not None:
                cache.follow(batch.position)
        elif cache is not None:
            cache.apply(batch)
        services.hub.publish(batch)
        await waiter.advance(batch.position)

    def _delivered(position: int) -> bool:
        """Whether the hub and the cache already have the batch ending at `position`."""
        hub_position = services.hub.position
        if hub_position is None or hub_position < position:
            return False
        return cache is None or cache.position is None or cache.position >= position

    def lost() -> None:
        if cache is not None:
            cache.stop()
        if separate:  # the next node may be another replica, behind this one: poll it meanwhile
            waiter.position = 0

    async def resync() -> None:
        """(Re)subscribed: anything published while we were away is a gap the hub must see."""
        fed.clear()
        await services.read_model.follow_pointer()
        checkpoint = await services.read_model.checkpoint()
        if cache is not None:
            cache.follow(checkpoint)
        known = services.hub.position
        if known is not None and checkpoint > known:
            services.hub.publish(Batch(checkpoint, checkpoint, [], []))
        elif known is None:
            services.hub.position = checkpoint
        await waiter.restart(checkpoint)  # maybe behind what was known: never answer early

    async def projected(position: int) -> None:
        PROJECTED_POSITION.set(position)
        if not separate:
            await waiter.advance(position)

    def delivered(batch: Batch) -> None:
        """This process's projector's batch, as soon as it is in Redis: the cache holds a
        mutation's documents before the mutation is woken, and subscribers here need not wait
        for the feed. Whichever of this and the feed's message comes first is applied; the hub
        and the cache drop the other as a repeat."""
        if runner.projector.keys.generation != services.read_model.keys.generation:
            return  # queries here read another generation until the feed's switch notice
        if cache is not None:
            cache.apply(batch)
        services.hub.publish(batch)

    head = {"appended": 0, "announced": 0}
    announcing: list[asyncio.Task[Any]] = []

    async def announce() -> None:
        """One announcement per burst: a group commit calls `appended` once per command. The
        head is always raised; the wake-up notice only goes out when the projector leads in
        another process (one that takes the lease meanwhile catches up when it starts). While
        it leads here, it is woken in-process and only status and lag read the head: that is
        raised at most every HEAD_EVERY seconds, not once per group commit."""
        while head["appended"] > head["announced"]:
            if runner.leading:
                await asyncio.sleep(HEAD_EVERY)
            position = head["appended"]
            await _announce(services, position, wake_others=not runner.leading)
            head["announced"] = position

    def appended(position: int) -> None:
        APPENDS.inc()
        if run_projector:
            runner.wake(position)
        head["appended"] = max(head["appended"], position)
        if not announcing or announcing[0].done():
            announcing[:] = [services.spawn(announce(), "announce")]

    services.store.on_append(appended)
    if services.settings.idempotency_ttl > 0:
        services.spawn(prune_forever(services.store, services.settings.idempotency_ttl),
                       "prune-idempotency-keys")
    services.spawn(
        listen(services.nodes.reader, keys.changes_channel, on_changes, resync, lost), "changes"
    )
    if run_projector:
        if not separate:  # reading a replica, the cache and subscribers follow its feed alone
            runner.on_batch(delivered)
        runner.on_checkpoint(projected)
        _follow_appends(services)
        services.spawn(runner.run(), "projector")


async def _fell_back(services: Services, position: int) -> None:
    """The node this process reads stands at `position`, behind what it had reached (a
    replica resynchronised from a new primary that lost writes): waits and the cache start
    again from there; the hub drops what it already delivered."""
    log.warning("the redis node read fell back from %d to %d", services.waiter.position,
                position)
    await services.waiter.restart(position)
    if services.read_model.cache is not None:
        services.read_model.cache.follow(position)


def _follow_appends(services: Services) -> None:
    """Wake the local projector on every other process's append notice."""

    async def wake(_message: str) -> None:
        services.runner.wake()

    async def catch_up() -> None:
        services.runner.wake()

    channel = services.read_model.keys.appended_channel
    services.spawn(listen(services.redis, channel, wake, catch_up), "appended")


async def run_projector_alone(services: Services) -> None:
    """The `project` command: lead (or stand by), woken by other processes' append notices."""
    _follow_appends(services)
    await services.runner.run()


async def _announce(services: Services, position: int, wake_others: bool) -> None:
    """Tell Redis the store's new head and (`wake_others`) wake the projector in whichever
    process it runs.

    Best effort: without Redis the projector finds the events by polling once Redis is back.
    """
    try:
        await services.read_model.note_head(position, announce=wake_others)
    except (RedisError, OSError) as error:
        log.warning("could not announce position %d: %s", position, error)


async def _cancel_all(services: Services) -> None:
    tasks = list(services.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
