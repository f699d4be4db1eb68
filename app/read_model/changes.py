"""The change message: what the projector publishes after each committed batch, and what every
API process reads from the feed (its document cache, its subscribers and its waiters).

One JSON object per batch:
`{"from": F, "position": P, "changes": [change…], "events": [event…]}` covers positions (F, P];
each change is `{"position", "kind", "entity", "id", "doc", "previous_location_id"}` with the
entity's new document, so fan-out needs no reads; each event is `event_json`'s shape. A rebuild's
switch of generation is the same object with no changes or events and `"generation": N`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.event_store.base import RecordedEvent
from app.projections.documents import Change, Doc, iso


@dataclass(frozen=True, slots=True)
class Batch:
    """One committed projector batch: positions (from_position, position], changes, events."""

    from_position: int
    position: int
    changes: list[Change]
    events: list[dict[str, Any]]
    generation: int | None = None  # set on the notice of a switch to a rebuilt read model


_HEAD = re.compile(r'\{"from":\d+,"position":(\d+),"changes":\[')


def peek(message: str) -> int | None:
    """The position of a batch's message, read from its head alone (a process that already has
    the batch need not decode the rest); None for a switch notice."""
    head = _HEAD.match(message)
    if head is None or '"generation"' in message[-32:]:  # (a false alarm only costs a parse)
        return None
    return int(head.group(1))


def parse(message: str | bytes) -> Batch:
    """A message as published by `encode` or `encode_switch`."""
    raw = orjson.loads(message)
    changes = [
        Change(c["position"], c["kind"], c["entity"], c["id"], c["doc"],
               c.get("previous_location_id"))
        for c in raw.get("changes", [])
    ]
    return Batch(raw.get("from", 0), raw["position"], changes, raw.get("events", []),
                 raw.get("generation"))


def of(from_position: int, changes: Sequence[Change], events: Sequence[RecordedEvent]) -> Batch:
    """The batch of `events` (read after `from_position`) with their `changes`: equal to what
    `parse` makes of its message, and sharing the projector's documents, which are never changed
    once made (app/projections/ makes a new one per event)."""
    return Batch(from_position, events[-1].position, list(changes),
                 [event_json(e) for e in events])


def encode(batch: Batch, serialised: Callable[[Doc], bytes]) -> bytes:
    """The message of a batch; `serialised(doc)` gives each document's JSON, which the caller
    has already made for its Redis writes (each document is serialised once)."""
    parts = []
    for change in batch.changes:
        previous = change.previous_location_id
        parts.append(
            b'{"position":%d,"kind":"%b","entity":"%b","id":%d,"doc":%b,'
            b'"previous_location_id":%b}' % (
                change.position, change.kind.encode(), change.entity.encode(), change.entity_id,
                b"null" if change.doc is None else serialised(change.doc),
                b"null" if previous is None else b"%d" % previous,
            )
        )
    return b'{"from":%d,"position":%d,"changes":[%b],"events":%b}' % (
        batch.from_position, batch.position, b",".join(parts), orjson.dumps(batch.events),
    )


def encode_switch(position: int, generation: int) -> bytes:
    """The notice that queries now read `generation`, which stands at `position`."""
    return orjson.dumps({"from": position, "position": position, "changes": [], "events": [],
                         "generation": generation})


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """An event as subscribers of the `events` feed receive it."""
    return {
        "position": event.position, "stream_id": event.stream_id, "version": event.version,
        "type": event.type, "data": event.data, "recorded_at": iso(event.recorded_at),
        "correlation_id": event.metadata.get("correlation_id"),
        "actor": event.metadata.get("actor"),
    }
