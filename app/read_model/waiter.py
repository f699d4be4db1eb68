"""Read-your-writes: lets a request wait until the projector has committed a given position."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from redis.exceptions import RedisError

from app.read_model.redis import ReadModel

POLL_SECONDS = 0.25  # fallback when a pub/sub notice is missed (for example across a reconnect)


class CheckpointWaiter:
    """Knows the newest projected position; woken by the projector's notices, polls as fallback.

    Each waiting request holds a future in a heap ordered by the position it waits for, so an
    advance wakes exactly the requests it satisfies (not every waiter to re-check).
    """

    def __init__(self, read_model: ReadModel) -> None:
        self._read_model = read_model
        self.position = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def advance(self, position: int) -> None:
        if position > self.position:
            cache = self._read_model.cache
            if cache is not None:  # (the projector of this process may tell before the feed)
                cache.saw(position)  # those woken must not be answered from before it
            self.position = position
            while self._waiting and self._waiting[0][0] <= position:
                future = heapq.heappop(self._waiting)[2]
                if not future.done():
                    future.set_result(None)

    async def restart(self, position: int) -> None:
        """The node read now stands at `position`, perhaps BEHIND what was known (another
        replica, or one that lost writes in a failover): from now on waits count from there, so
        none is answered before that node holds its position."""
        if position < self.position:
            self.position = position
        await self.advance(position)

    async def wait_for(self, position: int, seconds: float) -> bool:
        """True once the read model holds `position`; False if `seconds` pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.position < position:
            now = loop.time()
            if now >= deadline:
                return False
            future: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiting, (position, next(self._order), future))
            # woken by an advance, or at the poll time by this timer (one handle, no wrapper)
            timer = loop.call_at(min(deadline, now + POLL_SECONDS), _wake, future)
            try:
                await future
            finally:
                timer.cancel()
            if self.position < position:  # the poll time came: ask Redis
                try:
                    await self.advance(await self._read_model.checkpoint())
                except (RedisError, OSError):
                    return False  # the read model is unreachable: waiting cannot help
        return True


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
