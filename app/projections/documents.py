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

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position, "kind": self.kind, "entity": self.entity,
            "id": self.entity_id, "doc": self.doc,
            "previous_location_id": self.previous_location_id,
        }


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


def stamp(doc: Doc, event_version: int, recorded_at: str, position: int) -> Doc:
    """The document as of an event of its own stream."""
    return {**doc, "version": event_version, "updated_at": recorded_at, "position": position}


def stamped(doc: Doc, event_version: int, recorded_at: str, position: int) -> Doc:
    """`stamp` in place, for a document the caller has just made."""
    doc["version"] = event_version
    doc["updated_at"] = recorded_at
    doc["position"] = position
    return doc
