"""Fans the projector's committed batches out to this process's subscribers.

One Redis subscription per process feeds the hub; each subscriber has a bounded queue. A
subscriber that falls behind is closed with an error instead of growing memory; a gap in the
stream of batches (a missed message, a Redis restart) interrupts every subscriber that cannot
recover by itself, so none is ever left silently missing changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from app.observability import SUBSCRIBERS
from app.read_model.changes import Batch

log = logging.getLogger(__name__)


class SubscriptionClosed(Exception):
    """The subscription cannot continue; the client should resubscribe."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Subscriber:
    """A bounded queue of batches for one subscription."""

    def __init__(
        self, hub: ChangeHub, size: int, heals_gaps: bool, wants: Callable[[Batch], bool]
    ) -> None:
        self._hub = hub
        self._size = size
        self.queue: deque[Batch] = deque()
        self.heals_gaps = heals_gaps
        self.wants = wants
        self.closed: SubscriptionClosed | None = None
        self.counted = True
        self._wakeup = asyncio.Event()

    def offer(self, batch: Batch) -> None:
        if self.closed is not None or not self.wants(batch):
            return
        if len(self.queue) >= self._size:
            self.queue.clear()  # its memory goes now, not when the client finally reads
            self.close(SubscriptionClosed(
                "This subscription fell too far behind and was closed; resubscribe.",
                "SUBSCRIBER_TOO_SLOW",
            ))
        else:
            self.queue.append(batch)
        self._wakeup.set()

    def close(self, reason: SubscriptionClosed) -> None:
        self.closed = reason
        self._wakeup.set()

    async def next(self) -> Batch:
        """The next batch; raises SubscriptionClosed once the subscription was closed."""
        while True:
            if self.closed is not None:
                raise self.closed
            if self.queue:
                return self.queue.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._hub.unsubscribe(self)


class ChangeHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self.position: int | None = None

    @property
    def queue_size(self) -> int:
        """Batches a subscriber may fall behind before it is closed."""
        return self._queue_size

    def subscribe(
        self, heals_gaps: bool = False, wants: Callable[[Batch], bool] = lambda _batch: True,
        counted: bool = True,
    ) -> Subscriber:
        """A new subscriber of the batches it `wants` (filtered here, so others cost nothing).

        Use it as a context manager: leaving frees it at once. One not `counted` feeds others
        (app/schema/sharing.py), which count themselves in `cqrs_subscribers`.
        """
        subscriber = Subscriber(self, self._queue_size, heals_gaps, wants)
        subscriber.counted = counted
        self._subscribers.add(subscriber)
        if counted:
            SUBSCRIBERS.inc()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            if subscriber.counted:
                SUBSCRIBERS.dec()

    def publish(self, batch: Batch) -> None:
        """Deliver a batch; a gap before it first interrupts subscribers that cannot heal it."""
        if self.position is not None and batch.from_position > self.position:
            self.interrupt(f"changes between {self.position} and {batch.from_position} were missed")
        if self.position is not None and batch.position <= self.position:
            return  # already delivered (a replayed message)
        if self.position is not None and batch.from_position < self.position:
            batch = _after(batch, self.position)  # projected again after a failover: only the new
        self.position = batch.position
        for subscriber in list(self._subscribers):
            subscriber.offer(batch)

    def interrupt(self, why: str) -> None:
        """Close every subscription that cannot recover a gap by itself."""
        log.warning("change feed interrupted: %s", why)
        reason = SubscriptionClosed(
            "The change feed was interrupted; resubscribe to continue.", "CHANGES_INTERRUPTED"
        )
        for subscriber in list(self._subscribers):
            if not subscriber.heals_gaps:
                subscriber.close(reason)


def _after(batch: Batch, position: int) -> Batch:
    """The part of `batch` after `position` (what subscribers have not been given yet)."""
    return Batch(position, batch.position, [c for c in batch.changes if c.position > position],
                 [e for e in batch.events if e["position"] > position], batch.generation)
