"""Read-model documents and changes: plain JSON-ready dicts keyed by (kind, id)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

Doc = dict[str, Any]
Entity = Literal["location", "employee"]
DocKey = tuple[Entity, int]
ChangeKind = Literal["CREATED", "UPDATED", "REMOVED"]


@dataclass(frozen=True, slots=True)
class Change:
    """One entity's change in one commit, with its new document so fan-out needs no reads."""

    position: int
    kind: ChangeKind
    entity: Entity
    entity_id: int
    doc: Doc | None
    previous_location_id: int | None = None


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where an event stands: its stream version, its commit time (ISO text), its position."""

    version: int
    updated_at: str
    position: int


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_last_iso: tuple[dt.datetime | None, str] = (None, "")


def iso(moment: dt.datetime) -> str:
    """`moment.isoformat()`, computed once per commit: the events of a commit, read together,
    share one datetime object (hashing aware datetimes for a real cache costs more)."""
    global _last_iso
    last = _last_iso
    if moment is last[0]:
        return last[1]
    text = moment.isoformat()
    _last_iso = (moment, text)
    return text


def micros(moment: dt.datetime) -> int:
    """A UTC instant as integer microseconds: exact as a Redis score (below 2**53)."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


def stamped(doc: Doc, at: Stamp) -> Doc:
    """`doc` (which the caller has just made) as of the event `at`, in place."""
    doc["version"] = at.version
    doc["updated_at"] = at.updated_at
    doc["position"] = at.position
    return doc
