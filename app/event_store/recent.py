"""The events this process committed last, kept so its projector need not read them back.

A process that appends and projects (the default `serve`) would otherwise write each event to the
database on one thread and read it back on another a moment later, decoding the row again. The
store keeps its own newest commits here, after they are durable, as one run of consecutive
positions: a commit that does not follow the run (another process appended in between) starts a
new run, so whatever this answers is exactly what the database holds at those positions. A read
it cannot answer whole goes to the database. A store starts keeping them at its first
`read_batch`: a process that does not project (an API worker beside a separate projector) keeps
none and pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.event_store.base import RecordedEvent


class RecentCommits:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._events: list[RecordedEvent] = []

    def add(self, commits: Iterable[RecordedEvent]) -> None:
        """Whole commits, in position order, once they are durable."""
        events = self._events
        for event in commits:
            if events and event.position != events[-1].position + 1:
                events.clear()
            events.append(event)
        if len(events) > 2 * self._size:
            cut = len(events) - self._size
            while events[cut - 1].commit_position != events[cut - 1].position:
                cut += 1  # keep whole commits only
            del events[:cut]

    def clear(self) -> None:
        """Forget every kept commit (after an erasure: they may hold the erased values)."""
        self._events.clear()

    def batch(self, after_position: int, limit: int) -> list[RecordedEvent] | None:
        """Up to `limit` events after `after_position` and the rest of the last one's commit,
        or None when the run does not start at or before the first of them."""
        events = self._events
        if not events or not events[0].position <= after_position + 1 <= events[-1].position:
            return None
        start = after_position + 1 - events[0].position
        end = min(start + limit, len(events))
        last = events[end - 1]
        end += last.commit_position - last.position  # the run holds whole commits
        return events[start:end]
