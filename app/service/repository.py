"""Loads aggregates from their streams, from the newest snapshot on, so long streams stay cheap."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from app.domain import events as e
from app.domain.model import Employee, Location, evolve_employee, evolve_location
from app.domain.schema import from_data
from app.event_store.base import EventStore, Snapshot

A = TypeVar("A", Location, Employee)


class Repository:
    """Aggregates by id; writes a snapshot every `snapshot_every` events of a stream."""

    def __init__(self, store: EventStore, snapshot_every: int = 100) -> None:
        self._store = store
        self._snapshot_every = snapshot_every

    async def location(self, location_id: int) -> Location | None:
        return await self._load(e.location_stream(location_id), Location, evolve_location)

    async def employee(self, employee_id: int) -> Employee | None:
        return await self._load(e.employee_stream(employee_id), Employee, evolve_employee)

    async def _load(
        self,
        stream_id: str,
        cls: type[A],
        evolve: Callable[[A | None, e.DomainEvent], A | None],
    ) -> A | None:
        snapshot = await self._store.load_snapshot(stream_id)
        state: A | None = _thaw(cls, snapshot.state) if snapshot else None
        after = snapshot.version if snapshot else 0
        recorded = await self._store.read_stream(stream_id, after_version=after)
        for event in recorded:
            state = evolve(state, from_data(event.type, event.data))
        if state is not None and recorded and self._crossed_snapshot(after, state.version):
            await self._store.save_snapshot(Snapshot(stream_id, state.version, _freeze(state)))
        return state

    def _crossed_snapshot(self, before: int, now: int) -> bool:
        return now // self._snapshot_every > before // self._snapshot_every


def _freeze(state: Location | Employee) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, dt.date) else v
        for k, v in dataclasses.asdict(state).items()
    }


def _thaw(cls: type[A], data: dict[str, Any]) -> A:
    if "date_of_birth" in data:
        data = {**data, "date_of_birth": dt.date.fromisoformat(data["date_of_birth"])}
    return cls(**data)
