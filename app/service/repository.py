"""Loads aggregates from their streams, from the newest snapshot on, so long streams stay cheap.

An optional in-process cache keeps the aggregates this process last saw. Deciding on a cached
aggregate is safe because every append states the expected version of each stream it relied on:
a cached state that another writer made stale fails the append, and the command is decided again
on fresh state. Errors decided on cached state are checked again on fresh state too (see
`app/service/handlers.py`).

A snapshot holds an aggregate's fields as they were when it was written; `SNAPSHOT_VERSIONS`
names the shape of each aggregate's now. A snapshot of another shape is ignored (the stream is
replayed from its start) and replaced, never loaded into the wrong fields.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from app.domain import events as e
from app.domain.model import Employee, Location, evolve_employee, evolve_location
from app.domain.schema import field_names, from_data, plain
from app.event_store.base import EventStore, Snapshot

log = logging.getLogger(__name__)
A = TypeVar("A", Location, Employee)
Aggregate = Location | Employee
SNAPSHOT_VERSIONS: dict[type[Aggregate], int] = {Location: 1, Employee: 1}
"""Raise an aggregate's number whenever its fields change (tests/unit/test_snapshot_versions.py
holds the fields of each number, so a change without a new number fails)."""


class Repository:
    """Aggregates by id; writes a snapshot every `snapshot_every` events of a stream."""

    def __init__(
        self, store: EventStore, snapshot_every: int = 100, cache_size: int = 0
    ) -> None:
        self._store = store
        self._snapshot_every = snapshot_every
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Aggregate] = OrderedDict()
        self.snapshot_loads = 0
        """Loads that started from a snapshot (for benchmarks and operators)."""
        self.events_replayed = 0
        """Events read from streams to rebuild aggregates."""
        self.stale_snapshots = 0
        """Snapshots ignored because they hold another shape than the aggregate's now."""

    async def location(self, location_id: int) -> Location | None:
        return await self._load(e.location_stream(location_id), Location, evolve_location)

    async def employee(self, employee_id: int) -> Employee | None:
        return await self._load(e.employee_stream(employee_id), Employee, evolve_employee)

    def cached(self, stream_id: str) -> Aggregate | None:
        """The aggregate as this process last saw it, if it still remembers it."""
        state = self._cache.get(stream_id)
        if state is not None:
            self._cache.move_to_end(stream_id)
        return state

    def forget(self, stream_ids: Iterable[str]) -> None:
        for stream_id in stream_ids:
            self._cache.pop(stream_id, None)

    async def advance(
        self, stream_id: str, state: Aggregate | None, new: Iterable[e.DomainEvent]
    ) -> None:
        """`new` events were appended to the stream at `state`: remember the state after them."""
        before = state.version if state is not None else 0
        for event in new:
            state = _evolve(stream_id, state, event)
        if state is None:
            return
        self._remember(stream_id, state)
        if self._crossed_snapshot(before, state.version):
            try:
                await self._store.save_snapshot(_snapshot(stream_id, state))
            except Exception as exc:  # the events are committed; a later load snapshots again
                log.warning("could not save a snapshot of %s: %s", stream_id, exc)

    def _remember(self, stream_id: str, state: Aggregate | None) -> None:
        if self._cache_size <= 0:
            return
        if state is None:
            self._cache.pop(stream_id, None)
            return
        self._cache[stream_id] = state
        self._cache.move_to_end(stream_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _load(
        self,
        stream_id: str,
        cls: type[A],
        evolve: Callable[[A | None, e.DomainEvent], A | None],
    ) -> A | None:
        snapshot, recorded = await self._store.load_stream(stream_id)
        stale = snapshot is not None and snapshot.schema_version != SNAPSHOT_VERSIONS[cls]
        if stale:
            self.stale_snapshots += 1
            snapshot = None
            recorded = await self._store.read_stream(stream_id)  # replayed from its start
        state: A | None = _thaw(cls, snapshot.state) if snapshot else None
        after = snapshot.version if snapshot else 0
        if snapshot is not None:
            self.snapshot_loads += 1
        self.events_replayed += len(recorded)
        for event in recorded:
            state = evolve(state, from_data(event.type, event.data))
        if state is not None and recorded and (
                stale or self._crossed_snapshot(after, state.version)):
            await self._store.save_snapshot(_snapshot(stream_id, state))
        self._remember(stream_id, state)
        return state

    def _crossed_snapshot(self, before: int, now: int) -> bool:
        return now // self._snapshot_every > before // self._snapshot_every


def _evolve(stream_id: str, state: Aggregate | None, event: e.DomainEvent) -> Aggregate | None:
    if stream_id.startswith("location-"):
        return evolve_location(cast(Location | None, state), event)
    return evolve_employee(cast(Employee | None, state), event)


def _snapshot(stream_id: str, state: Aggregate) -> Snapshot:
    return Snapshot(stream_id, state.version, plain(state), SNAPSHOT_VERSIONS[type(state)])


def _thaw(cls: type[A], data: dict[str, Any]) -> A:
    """A snapshot's state; fields the aggregate no longer has (an employee's names and birth
    date, in snapshots written before it dropped them) are left out."""
    return cls(**{name: value for name, value in data.items() if name in field_names(cls)})
