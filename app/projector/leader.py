"""Leader election for projectors: a Redis lease that exactly one process holds at a time.

The holder renews the lease well before it expires; a process that dies stops renewing and a
standby takes the lease once it expires (`ttl` seconds at most). The lease decides who does the
work, not what is correct: every batch is still conditional on the checkpoint (see
`app.projector.loop`), so even two projectors briefly overlapping across a pause longer
than the lease apply each event exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.backoff import Backoff
from app.read_model.layout import RELEASE_LEASE, RENEW_LEASE
from app.read_model.refusals import RefusalLog

log = logging.getLogger(__name__)

class Lease:
    def __init__(self, redis: Redis, key: str, ttl: float = 3.0) -> None:
        self._redis = redis
        self._key = key
        self._ttl_ms = max(int(ttl * 1000), 300)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._renew = redis.register_script(RENEW_LEASE)
        self._release = redis.register_script(RELEASE_LEASE)

    @property
    def ttl(self) -> float:
        return self._ttl_ms / 1000

    async def try_acquire(self) -> bool:
        return bool(await self._redis.set(self._key, self.token, nx=True, px=self._ttl_ms))

    async def acquire(self) -> None:
        """Wait until this process holds the lease (checking a few times per lease period, and
        backing off while Redis is unreachable)."""
        waiting = False
        backoff = Backoff(cap=self.ttl)
        refusals = RefusalLog("projector lease")
        while True:
            try:
                if await self.try_acquire():
                    log.info("projector lease acquired (%s)", self.token)
                    return
                if not waiting:
                    holder = await self._redis.get(self._key)
                    log.info("standing by: %s holds the projector lease and projects; this "
                             "process takes over if it stops", holder)
                    waiting = True
                backoff.reset()
                refusals.cleared()
                delay = self.ttl / 6
            except (RedisError, OSError) as error:
                delay = backoff.next_delay()
                refusals.saw(error)
                log.warning("projector lease unavailable: %s; retrying in %.1fs", error, delay)
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[asyncio.Event]:
        """While acquired: renew in the background; the event is set if the lease is lost."""
        lost = asyncio.Event()
        renewing = asyncio.create_task(self._keep(lost), name="lease")
        try:
            yield lost
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            if not lost.is_set():
                try:
                    await self._release(keys=[self._key], args=[self.token])
                    log.info("projector lease released")
                except (RedisError, OSError) as error:  # it expires by itself
                    log.warning("could not release the projector lease: %s", error)

    async def _keep(self, lost: asyncio.Event) -> None:
        """Renew every third of the lease, counted from when the last renewal was sent, and
        wait for each answer for as long as the lease lasts as far as this process knows: a
        slow reply that arrives is as good as a quick one (the next renewal is not held back
        by it). Without an answer for two thirds of the lease, Redis is asked once more (see
        `_renewed_at_last`); the lease is lost only when Redis says so or cannot say in time."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()  # when the last renewal that Redis confirmed was sent
        while True:
            await asyncio.sleep(max(renewed + self.ttl / 3 - loop.time(), 0.0))
            sent = loop.time()
            try:
                kept = await asyncio.wait_for(
                    self._renewal(), max(renewed + self.ttl - sent, self.ttl / 3)
                )
            except (RedisError, OSError, TimeoutError) as error:
                if loop.time() - renewed < self.ttl * 2 / 3:
                    log.warning("could not renew the projector lease yet: %s", error)
                    await asyncio.sleep(self.ttl / 30)
                    continue
                kept = await self._renewed_at_last()
                sent = loop.time()
            if not kept:
                log.warning("projector lease lost")
                lost.set()
                return
            renewed = sent

    async def _renewal(self) -> Any:
        """Renew the lease for another `ttl` if Redis still holds our token: 1, else 0."""
        return await self._renew(keys=[self._key], args=[self.token, self._ttl_ms])

    async def _renewed_at_last(self) -> int:
        """One more renewal, given the whole lease period: 1 if Redis still held our token.

        Renewals late for most of the period are not proof the lease is gone: this process's
        own loop may have stalled (thousands of sockets closing at once) while Redis still held
        the token. Redis decides; only when it does not answer in time either is the lease taken
        as lost (another process may hold it by now).
        """
        try:
            return int(await asyncio.wait_for(self._renewal(), self.ttl))
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("could not renew the projector lease in time: %s", error)
            return 0
