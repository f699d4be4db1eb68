"""Applies a batch of events to the documents it touches, in memory, and says what changed.

A commit that a projection cannot apply (an unknown type, data that does not decode, a
projection that raises) is parked, not applied: it and every later event of its streams, in
order, until an operator retries them (app/projector/parked.py); so is a later commit that
changes a document of a parked stream (and then its own streams). Everything else goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from app.domain.events import DomainEvent, EmployeePersonalDataErased
from app.domain.schema import EVENT_TYPES, default_schema, from_data
from app.event_store.base import RecordedEvent
from app.projections import employees, locations
from app.projections.documents import Change, ChangeKind, Doc, DocKey, Stamp, iso

Keys = Callable[[DomainEvent], list[DocKey]]
Project = Callable[[Doc | None, DomainEvent, Stamp], Doc | None]
PROJECTIONS: tuple[tuple[Keys, Project], ...] = (
    (locations.keys, locations.project),
    (employees.keys, employees.project),
)


BEHIND_PARKED = "an earlier event of its stream is parked"


class UnknownEventType(Exception):
    """No projection knows this stored type: what it does to a document cannot be known."""


class NotInCurrentShape(Exception):
    """A stored event its upcasters could not bring to its type's current shape (the store
    reads it as stored): decoding it as the current shape could give it a wrong meaning."""


CURRENT = default_schema().current
Decoded = list[tuple[RecordedEvent, DomainEvent | Exception]]


def decode(events: Iterable[RecordedEvent]) -> Decoded:
    """Each stored event with the domain event it holds, or why it cannot be decoded; decoded
    once for both `touched` and `apply`."""
    return [(e, _decoded(e)) for e in events]


def _decoded(event: RecordedEvent) -> DomainEvent | Exception:
    if event.type not in EVENT_TYPES:
        return UnknownEventType(event.type)
    if event.schema_version != CURRENT[event.type]:
        return NotInCurrentShape(f"{event.type} v{event.schema_version}")
    try:
        return from_data(event.type, event.data)
    except Exception as error:  # a corrupt row: parked, never a stop of the read model
        return error


def touched(events: Decoded) -> list[DocKey]:
    """Every document key the events change, in first-seen order."""
    seen: dict[DocKey, None] = {}
    for _, event in events:
        if not isinstance(event, Exception):
            for keys, _ in PROJECTIONS:
                for key in keys(event):
                    seen[key] = None
    return list(seen)


@dataclass(frozen=True, slots=True)
class Parked:
    """An event set aside, and why (the class of the error only: messages may quote data)."""

    event: RecordedEvent
    reason: str


@dataclass
class BatchResult:
    docs: dict[DocKey, Doc | None]
    changes: list[Change] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    erased: list[int] = field(default_factory=list)
    """Employees whose personal data the batch erases (in commits it applies, not in parked
    ones): the projector rewrites their history."""


def apply(
    events: Decoded, before: Mapping[DocKey, Doc | None], parked: set[str] | None = None
) -> BatchResult:
    """The documents after `events`; changes collapse to one per entity per commit.

    `parked`: the streams whose events are set aside; a commit that fails adds its streams.
    """
    parked = set() if parked is None else parked
    docs = dict(before)
    result = BatchResult(docs)
    for commit in _commits(events):
        streams = {recorded.stream_id for recorded, _ in commit}
        reason = BEHIND_PARKED if parked and _waits(commit, streams, parked) else None
        start: dict[DocKey, Doc | None] = {}
        if reason is None:
            try:
                _apply_commit(commit, docs, start)
            except Exception as error:  # whatever a projection raises: park, never stop
                docs.update(start)  # nothing of a commit is applied unless all of it is
                reason = type(error).__name__
        if reason is not None:
            parked |= streams
            result.parked += (Parked(recorded, reason) for recorded, _ in commit)
            continue
        result.changes += _changes(commit[-1][0].commit_position, start, docs)
        result.erased += (event.employee_id for _, event in commit
                          if isinstance(event, EmployeePersonalDataErased))
    if result.erased:  # the batch's earlier versions of them go to the history too
        gone = set(result.erased)
        result.changes = [
            replace(c, doc=employees.erased(c.doc))
            if c.entity == "employee" and c.entity_id in gone and c.doc is not None else c
            for c in result.changes
        ]
    return result


def _waits(commit: Decoded, streams: set[str], parked: set[str]) -> bool:
    """Whether a commit must wait behind parked events: those of one of its streams, or of the
    stream of a document it changes (a hire into a location whose creation is parked cannot be
    applied to that location before it; its employee's stream waits with it)."""
    if streams & parked:
        return True
    return any(f"{kind}-{entity_id}" in parked  # a document's own stream: `location-7`
               for _, event in commit if not isinstance(event, Exception)
               for keys, _ in PROJECTIONS for kind, entity_id in keys(event))


def _apply_commit(
    commit: Decoded, docs: dict[DocKey, Doc | None], start: dict[DocKey, Doc | None]
) -> None:
    """Apply one commit's events to `docs`, noting in `start` each document as it was before."""
    for recorded, event in commit:
        if isinstance(event, Exception):
            raise event
        at = Stamp(recorded.version, iso(recorded.recorded_at), recorded.position)
        for keys, project in PROJECTIONS:
            for key in keys(event):
                current = docs.get(key)
                if key not in start:
                    start[key] = current
                docs[key] = project(current, event, at)


def replay(key: DocKey, doc: Doc | None, events: Decoded) -> Doc | None:
    """`doc` after those of `events` (all decoded) that change document `key`."""
    for recorded, event in events:
        assert not isinstance(event, Exception)
        at = Stamp(recorded.version, iso(recorded.recorded_at), recorded.position)
        for keys, project in PROJECTIONS:
            if key in keys(event):
                doc = project(doc, event, at)
    return doc


def _commits(events: Decoded) -> Iterator[Decoded]:
    """The events grouped by the commit they belong to, in order."""
    commit: Decoded = []
    for item in events:
        if commit and commit[-1][0].commit_position != item[0].commit_position:
            yield commit
            commit = []
        commit.append(item)
    if commit:
        yield commit


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
