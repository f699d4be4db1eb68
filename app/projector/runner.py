"""Runs the live projector in whichever process holds the leader lease, on the generation queries
read, and rebuilds the read model when it is missing or damaged (Redis flushed, replaced, or
keys evicted) without flooding subscribers with history.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis

from app.backoff import Backoff
from app.event_store.base import EventStore
from app.projector.generations import Generations
from app.projector.leader import Lease
from app.projector.loop import (
    TRANSIENT,
    BatchListener,
    CheckpointListener,
    ErasureListener,
    GenerationChanged,
    Projector,
    ReadModelDamaged,
)
from app.read_model.layout import Keys
from app.read_model.refusals import RefusalLog

log = logging.getLogger(__name__)
AUDIT_SAMPLE = 20  # documents and histories checked per audit


class ProjectionRunner:
    def __init__(
        self, store: EventStore, redis: Redis, keys: Keys, generations: Generations, lease: Lease,
        batch_size: int = 500, poll_interval: float = 1.0, audit_every: float = 5.0,
    ) -> None:
        self._store = store
        self._redis = redis
        self._base = keys
        self.generations = generations
        self.lease = lease
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._audit_every = audit_every
        self._listeners: list[CheckpointListener] = []
        self._batch_listeners: list[BatchListener] = []
        self._erasure_listeners: list[ErasureListener] = []
        self.projector = self._projector(keys.at(0))
        self.leading = False
        self._retiring: set[asyncio.Task[None]] = set()

    def _projector(self, keys: Keys) -> Projector:
        projector = Projector(self._store, self._redis, keys, self._batch_size,
                              self._poll_interval)
        for listener in self._listeners:
            projector.on_checkpoint(listener)
        for deliver in self._batch_listeners:
            projector.on_batch(deliver)
        for erased in self._erasure_listeners:
            projector.on_erasure(erased)
        return projector

    async def prepare(self) -> int:
        """Make sure a generation exists and point the projector at it (before serving)."""
        generation = await self.generations.ensure()
        self.projector = self._projector(self._base.at(generation))
        return generation

    def wake(self, position: int = 0) -> None:
        """See `Projector.wake`: `position` for this process's own appends, else 0."""
        self.projector.wake(position)

    def on_checkpoint(self, listener: CheckpointListener) -> None:
        self._listeners.append(listener)
        self.projector.on_checkpoint(listener)

    def on_batch(self, listener: BatchListener) -> None:
        """See `Projector.on_batch` (every generation's projector, as it leads)."""
        self._batch_listeners.append(listener)
        self.projector.on_batch(listener)

    def on_erasure(self, listener: ErasureListener) -> None:
        """Call `listener()` after an erasure is projected (and after a rebuild that applied
        one)."""
        self._erasure_listeners.append(listener)
        self.projector.on_erasure(listener)
        self.generations.on_erasure(listener)

    async def run(self) -> None:
        """Until cancelled: wait for the lease, then project for as long as it is held."""
        while True:
            await self.lease.acquire()
            async with self.lease.held() as lost:
                self.leading = True
                work = asyncio.create_task(self._lead(), name="projector")
                losing = asyncio.create_task(lost.wait())
                try:
                    await asyncio.wait([work, losing], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self.leading = False
                    for task in (work, losing):
                        task.cancel()
                    await asyncio.gather(work, losing, return_exceptions=True)

    async def _lead(self) -> None:
        backoff = Backoff()
        refusals = RefusalLog("projector")
        while True:
            try:
                await self._follow()
            except GenerationChanged as switched:
                log.info("%s; following it", switched)
            except ReadModelDamaged as damage:
                await self._rebuild(str(damage))
            except Exception as error:  # an outage, or a bug: never stop while holding the lease
                delay = backoff.next_delay()
                if refusals.saw(error) or isinstance(error, TRANSIENT):
                    log.warning("projector paused: %s; retrying in %.1fs", error, delay)
                else:
                    log.exception("projector failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            refusals.cleared()

    async def _follow(self) -> None:
        """Project the active generation live; raises when it is switched or damaged."""
        generation = await self.generations.active()
        if generation is None:
            raise ReadModelDamaged("the read model is gone (no generation pointer)")
        self.projector = self._projector(self._base.at(generation))
        if await self.generations.unbuilt() == generation:
            raise ReadModelDamaged("the read model was never built from the event store")
        await self.projector.run(self._audit, self._audit_every)

    async def _rebuild(self, reason: str) -> None:
        generation, retired = await self.generations.rebuild(reason, beside_live=False)
        self.projector = self._projector(self._base.at(generation))
        if retired is not None:
            self._retire(retired)
        for stale in await self.generations.stale():
            self._retire(stale)

    def _retire(self, generation: int) -> None:
        task = asyncio.create_task(self.generations.drop_later(generation))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _audit(self) -> None:
        """Cheap checks that the active generation still holds what its checkpoint implies."""
        keys = self.projector.keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.locations)
            pipe.zcard(keys.created("location"))
            pipe.zcard(keys.employees)
            pipe.zcard(keys.created("employee"))
            pipe.zcard(keys.commits)
            pipe.get(keys.checkpoint)
            pipe.zrandmember(keys.locations, AUDIT_SAMPLE)
            pipe.zrandmember(keys.employees, AUDIT_SAMPLE)
            pipe.zrandmember(keys.created("location"), AUDIT_SAMPLE)
            pipe.zrandmember(keys.created("employee"), AUDIT_SAMPLE)
            (locations, created_locations, employees, created_employees, commits, checkpoint,
             some_locations, some_employees, made_locations, made_employees) = await pipe.execute()
        problems = []
        if locations != created_locations:
            problems.append(f"{locations} live locations but {created_locations} created")
        if employees > created_employees:
            problems.append(f"{employees} live employees but {created_employees} created")
        if int(checkpoint or 0) > 0 and commits == 0:
            problems.append("the commit clock is empty")
        expected = [keys.location(int(i)) for i in some_locations or []]
        expected += [keys.employee(int(i)) for i in some_employees or []]
        expected += [keys.history(("location", int(i))) for i in made_locations or []]
        expected += [keys.history(("employee", int(i))) for i in made_employees or []]
        if expected:
            found = await self._redis.exists(*expected)
            if found != len(expected):
                problems.append(f"{len(expected) - found} of {len(expected)} sampled keys missing")
        if problems:
            raise ReadModelDamaged("; ".join(problems))

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

