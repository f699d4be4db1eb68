"""Blue/green read models: build a new generation from position 0 beside the live one, then
switch queries to it in one transaction and delete the old one.

The switch happens only when the new generation stands exactly where the live one does (same
checkpoint), inside a MULTI/EXEC that WATCHes both checkpoints and the pointer: no batch can land
in between, and the live projector's next batch, which WATCHes the pointer, aborts and moves to
the new generation. Subscribers see no historical changes: the rebuild publishes nothing, only
one switch notice that carries the new generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from app.event_store.base import EventStore
from app.projector.loop import ErasureListener, Projector
from app.read_model import changes
from app.read_model.client import delete_matching
from app.read_model.layout import Keys

log = logging.getLogger(__name__)
STATUS_TTL_MS = 30_000  # a rebuild that died stops being reported after this long


@dataclass
class Progress:
    generation: int
    position: int
    head: int
    started: float  # time.monotonic()
    applied: int = 0

    @property
    def rate(self) -> float:
        """Events applied per second so far."""
        elapsed = time.monotonic() - self.started
        return self.applied / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before there is a rate)."""
        rate = self.rate
        return max(self.head - self.position, 0) / rate if rate > 0 else None

    def to_json(self) -> bytes:
        return orjson.dumps({
            "generation": self.generation, "position": self.position, "head": self.head,
            "events_per_second": round(self.rate), "eta_seconds": self.eta,
        })


ProgressListener = Callable[[Progress], None]


class Generations:
    def __init__(
        self, store: EventStore, redis: Redis, keys: Keys, batch_size: int = 500,
        grace_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._redis = redis
        self._keys = keys  # the base keys
        self._batch_size = batch_size
        self.grace_seconds = grace_seconds
        self._erasure_listeners: list[ErasureListener] = []

    def on_erasure(self, listener: ErasureListener) -> None:
        """Call `listener()` once after a rebuild that applied an erasure: one committed while
        the new generation was being filled may have found its hire there in the clear."""
        self._erasure_listeners.append(listener)

    async def active(self) -> int | None:
        """The generation queries read (None: there is no read model at all)."""
        raw = await self._redis.get(self._keys.generation_pointer)
        return int(raw) if raw is not None else None

    async def ensure(self) -> int:
        """The active generation, creating an empty first one if there is none.

        One created over a non-empty log is marked `unbuilt`: the projector that leads rebuilds
        it instead of catching up in place, so subscribers are not sent the whole history."""
        active = await self.active()
        if active is not None:
            return active
        generation = int(await self._redis.incr(self._keys.generation_counter))
        await self._redis.set(self._keys.at(generation).checkpoint, 0)
        if await self._store.head_position() > 0:  # the leader rebuilds it, silently
            await self._redis.set(self._keys.unbuilt, generation)
        if await self._redis.set(self._keys.generation_pointer, generation, nx=True):
            log.info("started read model generation %d", generation)
            return generation
        await self.drop(generation)  # another process was first
        return await self.ensure()

    async def unbuilt(self) -> int | None:
        raw = await self._redis.get(self._keys.unbuilt)
        return int(raw) if raw is not None else None

    async def rebuild(
        self, reason: str, on_progress: ProgressListener | None = None, beside_live: bool = True
    ) -> tuple[int, int | None]:
        """Project the whole log into a new generation and switch to it: (new, retired).

        `beside_live`: a live projector may be advancing the current generation, so switch when
        the new one stands exactly where it does; otherwise (the caller is the projector that
        leads) build up to the store's head and switch. The retired generation is left for the
        caller to `drop` after a grace period (queries that started on it finish on it)."""
        generation, position = await self._unfinished()
        if generation is None:
            generation, position = int(await self._redis.incr(self._keys.generation_counter)), 0
            await self._redis.set(self._keys.at(generation).checkpoint, 0)
            log.warning("rebuilding the read model into generation %d: %s", generation, reason)
        else:
            log.warning("resuming the rebuild of generation %d at position %d: %s",
                        generation, position, reason)
        keys = self._keys.at(generation)
        projector = Projector(self._store, self._redis, keys, self._batch_size, live=False)
        progress = Progress(generation, position, await self._store.head_position(),
                            time.monotonic())
        reported = 0.0

        async def advanced(position: int) -> None:
            nonlocal reported
            progress.applied += position - progress.position
            progress.position = position
            progress.head = max(progress.head, position)
            if time.monotonic() - reported >= 0.5:
                reported = time.monotonic()
                await self._report(progress, on_progress)

        erased: list[bool] = []

        async def erasure() -> None:
            erased.append(True)

        projector.on_checkpoint(advanced)
        projector.on_erasure(erasure)
        await self._report(progress, on_progress)
        try:
            while True:
                retired, target, intact = await self._target(beside_live)
                progress.head = max(progress.head, target)
                await projector.catch_up(until=target)
                if await self._switch(retired, intact, keys):
                    break
        except BaseException:
            await self._redis.delete(self._keys.rebuilding)
            raise
        await self._report(progress, on_progress, final=True)
        if erased:
            for listener in self._erasure_listeners:
                try:
                    await listener()
                except Exception as exc:  # the read model is erased; only files lag behind
                    log.warning("clean-up after a rebuild with erasures failed: %s", exc)
        log.warning(
            "read model rebuilt: generation %d at position %d (%d events in %.1f s)",
            generation, progress.position, progress.applied, time.monotonic() - progress.started,
        )
        return generation, retired

    async def _unfinished(self) -> tuple[int | None, int]:
        """A rebuild a dead process left (its status not yet expired): generation, position."""
        status = await self._redis.get(self._keys.rebuilding)
        if status is None:
            return None, 0
        generation = int(orjson.loads(status)["generation"])
        position = await self._redis.get(self._keys.at(generation).checkpoint)
        if position is None or generation == await self.active():
            return None, 0
        return generation, int(position)

    async def _report(
        self, progress: Progress, listener: ProgressListener | None, final: bool = False
    ) -> None:
        if not final:
            await self._redis.set(self._keys.rebuilding, progress.to_json(), px=STATUS_TTL_MS)
        if listener is not None:
            listener(progress)

    async def _target(self, beside_live: bool) -> tuple[int | None, int, bool]:
        """The generation queries read now, the position to reach, and whether that generation
        is live and intact: then its checkpoint is the target, else the store's head."""
        pointer = await self.active()
        if pointer is not None and beside_live:
            live = await self._redis.get(self._keys.at(pointer).checkpoint)
            if live is not None:
                return pointer, int(live), True
        return pointer, await self._store.head_position(), False

    async def _switch(self, old: int | None, intact: bool, new: Keys) -> bool:
        """Point queries at `new` if it stands where the live generation does (or that one is
        damaged); False: not yet."""
        watched = [self._keys.generation_pointer, new.checkpoint]
        if old is not None and intact:
            watched.append(self._keys.at(old).checkpoint)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*watched)
            pointer, position, *live = await pipe.mget(*watched)
            if (int(pointer) if pointer is not None else None) != old or position is None:
                return False  # another switch or damage meanwhile: retarget
            if live and (live[0] is None or int(live[0]) != int(position)):
                return False  # the live projector moved on (or lost its keys): catch up again
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(self._keys.generation_pointer, new.generation)  # type: ignore[arg-type]
            pipe.delete(self._keys.rebuilding, self._keys.unbuilt)
            pipe.publish(self._keys.changes_channel,
                         changes.encode_switch(int(position), int(new.generation or 0)))
            try:
                await pipe.execute()
            except WatchError:
                return False
        log.info("queries now read generation %d (was %s)", new.generation, old)
        return True

    async def drop(self, generation: int) -> None:
        """Delete every key of one generation (never the active one)."""
        if generation == await self.active():
            raise ValueError(f"generation {generation} is the active one")
        await delete_matching(self._redis, self._keys.at(generation).pattern())

    async def drop_later(self, generation: int) -> None:
        """Delete a retired generation once queries that began on it have had time to finish."""
        await asyncio.sleep(self.grace_seconds)
        try:
            await self.drop(generation)
        except (RedisError, OSError) as error:  # left for the next rebuild (see `stale`)
            log.warning("could not delete read model generation %d: %s", generation, error)
            return
        log.info("deleted read model generation %d", generation)

    async def stale(self) -> list[int]:
        """Generations that are neither active nor being rebuilt (left by a crashed rebuild)."""
        active = await self.active()
        status = await self._redis.get(self._keys.rebuilding)
        building = orjson.loads(status)["generation"] if status else None
        found: set[int] = set()
        async for key in self._redis.scan_iter(match=f"{self._keys.base}:g*:checkpoint",
                                               count=1000):
            number = key.removeprefix(f"{self._keys.base}:g").removesuffix(":checkpoint")
            if number.isdigit():
                found.add(int(number))
        return sorted(found - {active, building})
