"""The one retry policy of every loop that waits out an outage (Redis, the event store):
exponential backoff with equal jitter (redis-py's `EqualJitterBackoff`), so processes that lost
Redis at the same moment come back spread out instead of in lockstep."""

from __future__ import annotations

from redis.backoff import EqualJitterBackoff

BASE_SECONDS = 0.1
CAP_SECONDS = 5.0


class Backoff:
    """Waits longer after each failure in a row (between half and all of `base * 2**n`, at most
    `cap`), and starts again from `base` after `reset()`."""

    def __init__(self, base: float = BASE_SECONDS, cap: float = CAP_SECONDS) -> None:
        self._policy = EqualJitterBackoff(cap=cap, base=base)
        self.failures = 0

    def next_delay(self) -> float:
        """The wait after one more failure."""
        delay = self._policy.compute(self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
