"""Queries over the Redis read model. Every call costs a constant number of round trips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.projections.documents import Doc
from app.read_model.keys import Keys


@dataclass(frozen=True, slots=True)
class Page:
    docs: list[Doc]
    has_next: bool
    total: int


def _docs(raw: Sequence[Any]) -> list[Doc | None]:
    return [json.loads(item) if item is not None else None for item in raw]


class ReadModel:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys

    async def checkpoint(self) -> int:
        return int(await self._redis.get(self.keys.checkpoint) or 0)

    async def locations(self, ids: Sequence[int]) -> list[Doc | None]:
        if not ids:
            return []
        return _docs(await self._redis.mget([self.keys.location(i) for i in ids]))

    async def employees(self, ids: Sequence[int]) -> list[Doc | None]:
        if not ids:
            return []
        return _docs(await self._redis.mget([self.keys.employee(i) for i in ids]))

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

    async def ping(self) -> bool:
        return bool(await self._redis.ping())
