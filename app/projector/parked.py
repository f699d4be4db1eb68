"""Parked events: list them, and retry them once the projection (or the row) is fixed.

A retry applies every parked stream's events again, in order, to the documents as they stand,
and rewrites the time-travel history of each document they touch as a fresh rebuild would
have written it. That is exact: a document of a parked stream had every later change parked
with it (app/projections/batch.py), so its history from there is the retried events alone; any
other document is changed by them only in ways that commute with its own events (a location's
set of employee ids), so its version at a later commit is its parked-time version there with
the retried events up to that commit applied on top. Events that still cannot be applied stay
parked, with the rest of their stream; a row removed from the store leaves the parked set.
An erasure of personal data parked with its stream is applied by the retry like any event, and
then the employee's whole history, from before the parked events too, is rewritten without
personal data, as a rebuild's erasing batch would have left it.

The retry is written by the projector's own script (`APPLY`): only if the checkpoint and the
number of parked events are still what the retry read, so it never races the live projector
(whose next batch is refused once a retry changed the read model under it, and re-read).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from redis.asyncio import Redis

from app.backoff import Backoff
from app.domain.events import DomainEvent
from app.event_store.base import EventStore, RecordedEvent
from app.projections import batch as projection
from app.projections.documents import Doc, DocKey
from app.projections.employees import erased
from app.read_model.layout import (
    APPLY,
    Keys,
    Rewrite,
    apply_keys,
    document,
    history_entry,
    parked_event,
    retry_args,
)

RETRY_ATTEMPTS = 100  # reads of the read model before a retry gives up (it moved each time)


@dataclass(frozen=True, slots=True)
class ParkedStream:
    stream_id: str
    positions: list[int]


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    applied: int  # events applied by this retry
    dropped: int  # parked events no longer in the store
    parked: list[ParkedStream]  # what is still parked


def by_stream(members: list[str]) -> list[ParkedStream]:
    """Parked set members grouped by stream, in the order each stream was parked."""
    grouped: dict[str, list[int]] = defaultdict(list)
    for position, stream_id in sorted(parked_event(m) for m in members):
        grouped[stream_id].append(position)
    return [ParkedStream(stream_id, positions) for stream_id, positions in grouped.items()]


class ParkedEvents:
    """The parked events of one read model (`keys`: of the generation queries read)."""

    def __init__(self, store: EventStore, redis: Redis, keys: Keys) -> None:
        self._store = store
        self._redis = redis
        self._keys = keys
        self._apply = redis.register_script(APPLY)

    async def streams(self) -> list[ParkedStream]:
        return by_stream([str(m) for m in await self._redis.zrange(self._keys.parked, 0, -1)])

    async def retry(self) -> RetryOutcome:
        """Apply what can now be applied; raises TimeoutError if the read model never held
        still long enough (a projector applying batch after batch meanwhile)."""
        backoff = Backoff(base=0.01, cap=1.0)
        for _ in range(RETRY_ATTEMPTS):
            outcome = await self._retry_once()
            if outcome is not None:
                return outcome
            await asyncio.sleep(backoff.next_delay())
        raise TimeoutError(f"the read model moved during each of {RETRY_ATTEMPTS} attempts")

    async def _retry_once(self) -> RetryOutcome | None:
        """One attempt; None when the read model moved before it could be written."""
        keys = self._keys
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.checkpoint)
            pipe.zrange(keys.parked, 0, -1)
            raw, members = await pipe.execute()
        if not members:
            return RetryOutcome(0, 0, [])
        checkpoint = int(raw or 0)
        events = await self._events(by_stream(members))
        decoded = projection.decode(events)
        touched = projection.touched(decoded)
        docs = [document(raw) for raw in
                await self._redis.mget([keys.doc(k) for k in touched])] if touched else []
        # which commits apply now, to the documents as they stand
        result = projection.apply(decoded, dict(zip(touched, docs, strict=True)))
        reparked = [aside.event for aside in result.parked]
        still = {e.position for e in reparked}
        applied = [(r, e) for r, e in decoded if r.position not in still]
        found = {e.position for e in events}
        gone = [p for p, _ in map(parked_event, members) if p not in found]
        if not applied and not gone:
            return RetryOutcome(0, 0, by_stream(members))
        rewrites = await self._rewrites(applied, set(result.erased))
        args = retry_args(keys, checkpoint, keys.generation is not None, len(members), rewrites,
                          members, reparked, gone, live=True)
        if await self._apply(keys=apply_keys(keys), args=args) != 1:
            return None
        return RetryOutcome(len(applied), len(gone), by_stream(
            [f"{e.position:015d}|{e.stream_id}" for e in reparked]
        ))

    async def _events(self, streams: list[ParkedStream]) -> list[RecordedEvent]:
        """The parked events still in the store, in position order."""
        found: list[RecordedEvent] = []
        for parked in streams:
            wanted = set(parked.positions)
            read = await self._store.read_all(
                parked.positions[0] - 1, len(parked.positions), parked.stream_id
            )
            found += (e for e in read if e.position in wanted)
        return sorted(found, key=lambda e: e.position)

    async def _rewrites(self, applied: projection.Decoded, erased: set[int]) -> list[Rewrite]:
        """Every document the applied events touch: its history from their first commit on;
        of an employee whose erasure they apply, all of its history (as a rebuild's erasing
        batch would rewrite it: app/projector/loop.py)."""
        touching: dict[DocKey, projection.Decoded] = defaultdict(list)
        for key in projection.touched(applied):
            touching[key] = [(r, e) for r, e in applied
                             if not isinstance(e, Exception) and key in _keys_of(e)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, events in touching.items():
                start = events[0][0].commit_position
                pipe.zrevrangebyscore(self._keys.history(key), f"({start}", "-inf", 0, 1)
                pipe.zrangebyscore(self._keys.history(key), start, "+inf")
                pipe.zrangebyscore(self._keys.history(key), "-inf", f"({start}")
            read = await pipe.execute()
        return [
            _rewrite(key, events, earlier, later,
                     before if key[0] == "employee" and key[1] in erased else None)
            for (key, events), earlier, later, before in zip(
                touching.items(), read[0::3], read[1::3], read[2::3], strict=True
            )
        ]


def _keys_of(event: DomainEvent) -> list[DocKey]:
    return [key for keys, _ in projection.PROJECTIONS for key in keys(event)]


def _rewrite(
    key: DocKey, events: projection.Decoded, earlier: list[str], later: list[str],
    erasing: list[str] | None = None,
) -> Rewrite:
    """Document `key`'s history from the first of `events` on, with them applied: at every
    commit position, its parked-time version there plus the events committed up to it.
    `erasing`: the history before that, of an employee whose erasure `events` apply; then
    every version, earlier ones too, is rewritten without personal data."""
    frozen = [history_entry(m) for m in earlier + later]
    commits = {r.commit_position for r, _ in events}
    points = sorted({p for p, _ in frozen[len(earlier):]} | commits)
    new: dict[int, Doc | None] = {}
    created: int | None = None
    previous = frozen[0][1] if earlier else None
    for point in points:
        base = next((doc for p, doc in reversed(frozen) if p <= point), None)
        doc = projection.replay(key, base, [(r, e) for r, e in events
                                            if r.commit_position <= point])
        if point in commits and previous is None:
            if doc is None:
                continue  # nothing to record, as a rebuild would record nothing
            created = created or point
        new[point] = doc
        previous = doc
    if erasing is None:
        return Rewrite(key, later, new, previous, created)
    versions = dict(map(history_entry, erasing)) | new
    return Rewrite(key, erasing + later,
                   {p: None if doc is None else erased(doc) for p, doc in versions.items()},
                   None if previous is None else erased(previous), created)
