"""Queries over the Redis read model (laid out by app/read_model/layout.py). Every call costs a
constant number of round trips."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from app.projections.documents import Doc, Entity, micros
from app.read_model.cache import DocumentCache
from app.read_model.layout import LATEST_AT, RAISE_TO, Keys, document, historic, parked_event
from app.read_model.refusals import CLUSTER, READ_ONLY, explain


@dataclass(frozen=True, slots=True)
class Page:
    docs: list[Doc]
    has_next: bool
    total: int


def _docs(raw: Sequence[Any]) -> list[Doc | None]:
    return [document(item) for item in raw]


class ReadModel:
    def __init__(
        self, redis: Redis, keys: Keys, cache: DocumentCache | None = None,
        primary: Redis | None = None,
    ) -> None:
        """Reads go to `redis`; the head notices to `primary` (by default the same node)."""
        self._redis = redis
        self.primary = redis if primary is None else primary
        self.keys = keys
        self.cache = cache
        self._latest_at = redis.register_script(LATEST_AT)
        self._raise_to = self.primary.register_script(RAISE_TO)

    def use_generation(self, generation: int) -> None:
        """Read generation `generation` from now on (after a rebuild switched to it)."""
        if generation != self.keys.generation:
            self.keys = self.keys.at(generation)
            if self.cache is not None:
                self.cache.stop()  # until the feed's notice of this switch re-follows

    async def follow_pointer(self) -> None:
        """Read whichever generation the pointer names (unchanged while there is none)."""
        raw = await self._redis.get(self.keys.generation_pointer)
        if raw is not None:
            self.use_generation(int(raw))

    async def rebuilding(self) -> bool:
        return bool(await self._redis.exists(self.keys.rebuilding))

    async def checkpoint(self) -> int:
        checkpoint = int(await self._redis.get(self.keys.checkpoint) or 0)
        if self.cache is not None:
            self.cache.saw(checkpoint)
        return checkpoint

    async def note_head(self, position: int, announce: bool = False) -> None:
        """Record that the event store has reached `position` (for status without SQL), and
        (`announce`) wake the projector, in whichever process it runs, in the same command."""
        channel = [self.keys.appended_channel] if announce else []
        await self._raise_to(keys=[self.keys.head], args=[position, *channel])

    async def parked(self) -> tuple[int, list[str]]:
        """How many events are parked, and their streams in the order they were parked."""
        members = await self._redis.zrange(self.keys.parked, 0, -1)
        streams = dict.fromkeys(parked_event(str(m))[1] for m in members)
        return len(members), list(streams)

    async def head(self) -> int:
        """The newest appended position any writer reported (at least the checkpoint)."""
        checkpoint, head = await self._redis.mget([self.keys.checkpoint, self.keys.head])
        return max(int(checkpoint or 0), int(head or 0))

    async def locations(self, ids: Sequence[int]) -> list[Doc | None]:
        return await self.current("location", ids)

    async def employees(self, ids: Sequence[int]) -> list[Doc | None]:
        return await self.current("employee", ids)

    def cached(self, entity: Entity, ids: Sequence[int]) -> list[Doc | None] | None:
        """Current documents from this process's cache, if it can answer every one of them."""
        return self.cache.answer(entity, ids) if self.cache is not None else None

    async def current(self, entity: Entity, ids: Sequence[int]) -> list[Doc | None]:
        """Current documents: from the cache where it can answer, the rest in one MGET."""
        if not ids:
            return []
        cache = self.cache
        if cache is None:
            return _docs(await self._redis.mget([self.keys.doc((entity, i)) for i in ids]))
        if (docs := self.cached(entity, ids)) is not None:
            return docs
        # one MGET for all of them (not only the misses): the answer is one point in time
        epoch = cache.epoch
        raw = await self._redis.mget(
            [self.keys.checkpoint, *(self.keys.doc((entity, i)) for i in ids)]
        )
        docs = _docs(raw[1:])
        cache.put(entity, ids, docs, int(raw[0] or 0), epoch)
        return docs

    async def all_locations(self) -> list[Doc]:
        ids = [int(str(i)) for i in await self._redis.zrange(self.keys.locations, 0, -1)]
        return [doc for doc in await self.locations(ids) if doc is not None]

    async def employee_page(self, after_id: int, first: int) -> Page:
        """Live employees with id > after_id, in id order."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.keys.employees, f"({after_id}", "+inf", start=0, num=first + 1)
            pipe.zcard(self.keys.employees)
            raw_ids, total = await pipe.execute()
        ids = [int(i) for i in raw_ids]
        docs = [d for d in await self.employees(ids[:first]) if d is not None]
        return Page(docs, len(ids) > first, int(total))

    async def docs_at(self, entity: Entity, ids: Sequence[int], position: int) -> list[Doc | None]:
        """Each entity's document as it was right after commit `position`."""
        if not ids:
            return []
        keys = [self.keys.history((entity, i)) for i in ids]
        return [historic(m) for m in await self._latest_at(keys=keys, args=[position])]

    async def ids_created_by(self, entity: Entity, position: int) -> list[int]:
        """Ids of every entity of a kind created at or before `position`, in id order."""
        raw = await self._redis.zrangebyscore(self.keys.created(entity), "-inf", position)
        return sorted(int(str(i)) for i in raw)

    async def all_locations_at(self, position: int) -> list[Doc]:
        ids = await self.ids_created_by("location", position)
        return [d for d in await self.docs_at("location", ids, position) if d is not None]

    async def employee_page_at(self, after_id: int, first: int, position: int) -> Page:
        """Employees alive right after `position`, with id > after_id, in id order."""
        ids = await self.ids_created_by("employee", position)
        alive = [d for d in await self.docs_at("employee", ids, position) if d is not None]
        rest = [d for d in alive if d["id"] > after_id]
        return Page(rest[:first], len(rest) > first, len(alive))

    async def position_at(self, moment: dt.datetime) -> int:
        """The last commit recorded at or before `moment` (0 before the first)."""
        hit = await self._redis.zrevrangebyscore(
            self.keys.commits, micros(moment), "-inf", start=0, num=1
        )
        return int(str(hit[0])) if hit else 0

    async def replicated(self, position: int, seconds: float) -> bool:
        """True once every replica connected to the primary holds what the primary holds now
        (so no process reading any replica can answer from before it); False after `seconds`.
        A write, then WAIT on the same connection: WAIT counts the replicas that acknowledged
        that connection's last write, and the replication stream is in order. Without
        replicas (or with an ACL denying INFO): True at once."""
        try:
            replicas = int((await self.primary.info("replication")).get("connected_slaves", 0))
        except NoPermissionError:
            return True
        if not replicas:
            return True
        async with self.primary.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.fence, position)
            pipe.execute_command("WAIT", replicas, max(int(seconds * 1000), 1))
            _done, acknowledged = await pipe.execute()
        return int(acknowledged) >= replicas

    async def readiness(self) -> str | None:
        """None when this process can answer queries and write its notices, else why not: the
        node it reads must serve a real key (a Cluster node answers PING but refuses keys with
        MOVED) and not be a cluster node; the primary must take writes (not a replica). An ACL
        that denies INFO or ROLE leaves that check out; the key is always read."""
        await self._redis.get(self.keys.checkpoint)
        with contextlib.suppress(NoPermissionError):
            if int((await self._redis.info("cluster")).get("cluster_enabled", 0)):
                return explain(CLUSTER, "cluster_enabled:1")
        with contextlib.suppress(NoPermissionError):
            role = await self.primary.execute_command("ROLE")  # type: ignore[no-untyped-call]
            if str(role[0]) != "master":
                return explain(READ_ONLY, f"ROLE {role[0]}")
        return None
