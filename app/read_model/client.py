"""The Redis client every component uses: redis-py's asyncio client packing commands in C.

redis-py's asyncio connection packs each command in Python, argument by argument; a projector
batch sends tens of thousands of arguments, and packing took a quarter of its time. Its
synchronous connection already packs with hiredis when hiredis is installed: the asyncio one
here does the same. It also bounds each write with `asyncio.wait_for`, which on Python 3.11 runs
the write as a Task of its own, one per command sent: here the write is bounded in the sending
task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool, Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis


class HiredisPackingConnection(Connection):
    """An asyncio connection whose commands are packed by hiredis (byte for byte the protocol
    redis-py's own packer writes for str, bytes, int and float arguments)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " in name:  # `CLIENT SETNAME`: one argument per word
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # an argument hiredis cannot pack: redis-py's packer says why
            return super().pack_command(*args)

    async def send_packed_command(
        self, command: str | bytes | Iterable[bytes], check_health: bool = True
    ) -> None:
        """redis-py's write, bounded by `socket_timeout` in the sending task."""
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        writer = self._writer
        assert writer is not None  # connected above
        try:
            async with asyncio.timeout(self.socket_timeout):
                writer.writelines(command)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as error:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {error}") from error
        except BaseException:  # a write cut short leaves the connection unusable
            await self.disconnect(nowait=True)
            raise


MAX_CONNECTIONS = 200
POOL_WAIT_SECONDS = 10.0


def connect(url: str, **options: Any) -> Redis:
    """A client for `url` (decoded responses), packing commands with hiredis if it is there.

    Its pool blocks (up to POOL_WAIT_SECONDS) when all MAX_CONNECTIONS are busy, so a burst of
    requests waits for a connection instead of failing.
    """
    if HIREDIS_AVAILABLE and url.startswith("redis://"):
        options.setdefault("connection_class", HiredisPackingConnection)
    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS,
        **options,
    )
    return Redis.from_pool(pool)


async def delete_matching(redis: Redis, pattern: str) -> None:
    """UNLINK every key matching a SCAN pattern, a thousand at a time."""
    batch: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)
