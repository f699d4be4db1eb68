"""One Redis pub/sub subscription per process and channel, re-established after any outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)
Handler = Callable[[str], Awaitable[None]]


async def listen(
    redis: Redis, channel: str, handler: Handler, on_reconnect: Callable[[], Awaitable[None]],
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Call `handler(message)` for each message on `channel` until cancelled.

    After every (re)subscription `on_reconnect` runs, so the caller can re-read what it may
    have missed while no subscription was active; `on_lost` runs as soon as one is lost.
    """
    backoff = 0.1
    while True:
        _raise_if_cancelled()
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                _raise_if_cancelled()
                await on_reconnect()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await handler(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the connection: resubscribe, never go silent
            if on_lost is not None:
                on_lost()
            log.warning("subscription to %s lost (%s); retrying in %.1fs", channel, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def _raise_if_cancelled() -> None:
    """Stop if cancelled, even when redis-py's `wait_for` swallowed the cancellation (3.11)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
