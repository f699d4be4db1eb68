"""Applies a batch of events to the documents it touches, in memory, and says what changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from app.domain.events import DomainEvent, EmployeePersonalDataErased
from app.domain.schema import EVENT_TYPES, from_data
from app.event_store.base import RecordedEvent
from app.projections import employees, locations
from app.projections.documents import Change, ChangeKind, Doc, DocKey, Stamp, iso

Keys = Callable[[DomainEvent], list[DocKey]]
Project = Callable[[Doc | None, DomainEvent, Stamp], Doc | None]
PROJECTIONS: tuple[tuple[Keys, Project], ...] = (
    (locations.keys, locations.project),
    (employees.keys, employees.project),
)


Decoded = list[tuple[RecordedEvent, DomainEvent | None]]


def decode(events: Iterable[RecordedEvent]) -> Decoded:
    """Each stored event with the domain event it holds (None for a type no projection knows),
    decoded once for both `touched` and `apply`."""
    return [(e, from_data(e.type, e.data) if e.type in EVENT_TYPES else None) for e in events]


def touched(events: Decoded) -> list[DocKey]:
    """Every document key the events change, in first-seen order."""
    seen: dict[DocKey, None] = {}
    for _, event in events:
        if event is not None:
            for keys, _ in PROJECTIONS:
                for key in keys(event):
                    seen[key] = None
    return list(seen)


@dataclass
class BatchResult:
    docs: dict[DocKey, Doc | None]
    changes: list[Change] = field(default_factory=list)
    erased: list[int] = field(default_factory=list)
    """Employees whose personal data the batch erases: the projector rewrites their history."""


def apply(events: Decoded, before: Mapping[DocKey, Doc | None]) -> BatchResult:
    """The documents after `events`; changes collapse to one per entity per commit."""
    docs = dict(before)
    result = BatchResult(docs)
    commit_start: dict[DocKey, Doc | None] = {}
    last = len(events) - 1
    for index, (recorded, event) in enumerate(events):
        if event is not None:
            at = Stamp(recorded.version, iso(recorded.recorded_at), recorded.position)
            for keys, project in PROJECTIONS:
                for key in keys(event):
                    current = docs.get(key)
                    if key not in commit_start:
                        commit_start[key] = current
                    docs[key] = project(current, event, at)
        if index == last or events[index + 1][0].commit_position != recorded.commit_position:
            result.changes += _changes(recorded.commit_position, commit_start, docs)
            commit_start = {}
    result.erased = [event.employee_id for _, event in events
                     if isinstance(event, EmployeePersonalDataErased)]
    if result.erased:  # the batch's earlier versions of them go to the history too
        gone = set(result.erased)
        result.changes = [
            replace(c, doc=employees.erased(c.doc))
            if c.entity == "employee" and c.entity_id in gone and c.doc is not None else c
            for c in result.changes
        ]
    return result


def _changes(
    position: int, start: Mapping[DocKey, Doc | None], docs: Mapping[DocKey, Doc | None]
) -> list[Change]:
    out = []
    for key, old in start.items():
        new = docs.get(key)
        if old is None and new is None:
            continue
        kind: ChangeKind = "CREATED" if old is None else "REMOVED" if new is None else "UPDATED"
        previous = old.get("location_id") if old is not None and key[0] == "employee" else None
        out.append(Change(position, kind, key[0], key[1], new, previous))
    return out
