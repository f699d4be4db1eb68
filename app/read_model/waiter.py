"""Read-your-writes: lets a request wait until the projector has committed a given position."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from app.read_model.redis import ReadModel

POLL_SECONDS = 0.25  # fallback when a pub/sub notice is missed (for example across a reconnect)


class CheckpointWaiter:
    """Knows the newest projected position; woken by the projector's notices, polls as fallback."""

    def __init__(self, read_model: ReadModel) -> None:
        self._read_model = read_model
        self.position = 0
        self._advanced = asyncio.Condition()

    async def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            async with self._advanced:
                self._advanced.notify_all()

    async def wait_for(self, position: int, seconds: float) -> bool:
        """True once the read model holds `position`; False if `seconds` pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.position < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with self._advanced:
                    await asyncio.wait_for(
                        self._advanced.wait_for(lambda: self.position >= position),
                        min(remaining, POLL_SECONDS),
                    )
            except TimeoutError:
                try:
                    await self.advance(await self._read_model.checkpoint())
                except (RedisError, OSError):
                    return False  # the read model is unreachable: waiting cannot help
        return True
