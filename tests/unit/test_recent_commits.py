"""The run of recent commits a store answers its own batches from (app/event_store/recent.py)."""

from __future__ import annotations

import datetime as dt

from app.domain.schema import default_schema
from app.event_store.base import NewEvent, RecordedEvent
from app.event_store.memory import MemoryEventStore, MemoryLog
from app.event_store.recent import RecentCommits

AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def commit(first: int, size: int) -> list[RecordedEvent]:
    last = first + size - 1
    return [RecordedEvent(p, "s-1", p, "Tick", 1, {}, {}, AT, last) for p in range(first, last + 1)]


def positions(events: list[RecordedEvent] | None) -> list[int] | None:
    return None if events is None else [e.position for e in events]


def test_a_batch_is_answered_only_from_a_run_that_covers_its_start() -> None:
    recent = RecentCommits()
    assert recent.batch(0, 10) is None
    recent.add(commit(5, 2) + commit(7, 3))
    assert recent.batch(3, 10) is None  # position 4 was never here
    assert positions(recent.batch(4, 10)) == [5, 6, 7, 8, 9]
    assert positions(recent.batch(4, 3)) == [5, 6, 7, 8, 9]  # the last commit whole
    assert positions(recent.batch(6, 1)) == [7, 8, 9]
    assert recent.batch(9, 10) is None  # nothing newer here: the database decides


def test_a_commit_that_does_not_follow_starts_a_new_run() -> None:
    recent = RecentCommits()
    recent.add(commit(1, 2))
    recent.add(commit(5, 1))  # 3 and 4 were appended elsewhere
    assert recent.batch(0, 10) is None and recent.batch(2, 10) is None
    assert positions(recent.batch(4, 10)) == [5]


def test_the_run_is_bounded_and_keeps_whole_commits() -> None:
    recent = RecentCommits(size=4)
    position = 1
    for size in (3, 3, 3, 3):
        recent.add(commit(position, size))
        position += size
    assert recent.batch(0, 1) is None
    kept = positions(recent.batch(6, 100))
    assert kept == [7, 8, 9, 10, 11, 12]
    assert recent.batch(5, 100) is None  # 6 belonged to a commit that was cut


async def test_a_store_keeps_its_commits_only_once_something_reads_its_batches() -> None:
    """A process that does not project (a write-only API worker, a benchmark) does not pay for
    keeping its commits; once its projector reads a batch, the next commits are kept."""
    store = MemoryEventStore(MemoryLog(), default_schema())
    await store.append([NewEvent("s-1", "Tick", {})], {"s-1": 0})
    assert store._recent.batch(0, 10) is None  # nothing kept
    assert positions(await store.read_batch(0, 10)) == [1]  # from the log itself
    await store.append([NewEvent("s-1", "Tick", {})], {"s-1": 1})
    assert positions(store._recent.batch(1, 10)) == [2]
