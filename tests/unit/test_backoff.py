"""The retry policy the outage loops share: exponential, capped, jittered, reset on success."""

from __future__ import annotations

from app.backoff import Backoff


def test_delays_double_within_half_and_all_of_each_step_up_to_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    for step in (0.1, 0.2, 0.4, 0.8, 1.0, 1.0):
        assert step / 2 <= backoff.next_delay() <= step
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1


def test_processes_failing_together_do_not_retry_in_lockstep() -> None:
    """A hundred processes that lost Redis at the same moment: their third waits differ."""
    waits = []
    for _ in range(100):
        backoff = Backoff()
        backoff.next_delay()
        backoff.next_delay()
        waits.append(backoff.next_delay())
    assert len(set(waits)) > 90
    assert min(waits) >= 0.2 and max(waits) <= 0.4
