"""One Redis pub/sub subscription per process and channel, re-established after any outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from app.backoff import Backoff
from app.read_model.refusals import RefusalLog

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
    backoff = Backoff()
    refusals = RefusalLog(f"change listener on {channel}")
    while True:
        _raise_if_cancelled()
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                _raise_if_cancelled()
                await on_reconnect()
                backoff.reset()
                refusals.cleared()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await handler(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the connection: resubscribe, never go silent
            if on_lost is not None:
                on_lost()
            delay = backoff.next_delay()
            refusals.saw(exc)
            log.warning("subscription to %s lost (%s); retrying in %.1fs", channel, exc, delay)
            await asyncio.sleep(delay)


def _raise_if_cancelled() -> None:
    """Stop if cancelled, even when redis-py's `wait_for` swallowed the cancellation (3.11)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
