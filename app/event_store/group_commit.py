"""Group commit, shared by every adapter: a writer task writes every append waiting at that
moment in one transaction (one sync to disk), checking each one's expected versions and
idempotency key in turn, so a stale append fails alone while the others of its group commit.

A store has one writer, or two where the database orders concurrent groups itself (`_pipeline`,
PostgreSQL): then two writers share a long queue, and the second group waits for the lock in the
database while the first is written. Appends in flight at once are ordered by the lock, each
still checked against the store as every append committed before it left it.

An adapter supplies only the transaction (`_write_group`: look up what `plan` needs, let it
decide, write its rows) and the reads. Appends are serialised by the adapter's transaction
(SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock) and take their positions as head + 1
inside it: positions are gapless, position order is commit order, and `recorded_at` never
decreases (max of now and the last recorded_at).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.domain.schema import EventSchema
from app.event_store.base import (
    AppendListener,
    AppendResult,
    ConcurrencyError,
    DuplicateCommand,
    IdempotencyRecord,
    NewEvent,
    RecordedEvent,
    Snapshot,
    in_current_shape,
)
from app.event_store.keys import Sealer, erased_streams
from app.event_store.recent import RecentCommits

MAX_GROUP = 256  # appends written in one transaction at most
MIN_SHARE = 16  # fewer waiting appends than twice this go as one group, even with two writers
log = logging.getLogger(__name__)


class ForeignWrite(Exception):
    """The group's transaction hit a row written outside the group commit (a unique key)."""


@dataclass(slots=True)
class Request:
    """One queued append and the future its caller awaits."""

    events: list[NewEvent]
    expected: dict[str, int]
    metadata: dict[str, Any]
    idempotency: IdempotencyRecord | None
    future: asyncio.Future[AppendResult]


@dataclass
class Plan:
    """What one group writes, and each request's outcome, decided before anything is written."""

    outcomes: list[AppendResult | BaseException] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    command_rows: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    def created(self) -> list[str]:
        return [s for s in self.after if s not in self.before]

    def updated(self) -> list[str]:
        return [s for s in self.after if s in self.before and self.after[s] != self.before[s]]

    def changed(self) -> list[str]:
        """Streams the group creates or advances."""
        return [s for s in self.after if self.after[s] != self.before.get(s)]

    def placed(self, head: int, at: dt.datetime) -> Plan:
        """This plan, made with no head (positions from 1), moved to follow `head` and recorded
        at `at` (for a store that learns the head only as it writes; rows changed in place)."""
        for row in self.rows:
            row["position"] += head
            row["commit_position"] += head
            row["recorded_at"] = at
        ours = set()
        for command in self.command_rows:
            command["commit_position"] += head
            command["recorded_at"] = at
            ours.add(command["key"])
        for n, outcome in enumerate(self.outcomes):
            if isinstance(outcome, AppendResult):
                self.outcomes[n] = AppendResult(
                    outcome.first_position + head, outcome.last_position + head, at)
            elif isinstance(outcome, DuplicateCommand) and outcome.record.key in ours:
                record = outcome.record  # a twin of an append in this group: placed with it
                self.outcomes[n] = DuplicateCommand(
                    replace(record, commit_position=record.commit_position + head))
        return self


def idempotency_keys(group: Sequence[Request]) -> list[str]:
    return [r.idempotency.key for r in group if r.idempotency is not None]


def expected_streams(group: Sequence[Request]) -> list[str]:
    """Every stream the group states a version of, once each, in order."""
    return list({s: None for r in group for s in r.expected})


def plan(
    group: Sequence[Request],
    known: dict[str, IdempotencyRecord],
    stored: dict[str, int],
    head: tuple[int, dt.datetime] | None,
) -> Plan:
    """Each request checked and placed in order, as if appended one after the other."""
    position = head[0] if head else 0
    now = dt.datetime.now(dt.UTC)
    if head is not None and head[1] > now:
        now = head[1]
    result = Plan(before=dict(stored))
    versions = dict(stored)
    for request in group:
        idempotency = request.idempotency
        if idempotency is not None and idempotency.key in known:
            result.outcomes.append(DuplicateCommand(known[idempotency.key]))
            continue
        stale = next(((s, v) for s, v in request.expected.items() if versions.get(s, 0) != v), None)
        if stale is not None:
            result.outcomes.append(ConcurrencyError(stale[0], stale[1], versions.get(stale[0], 0)))
            continue
        commit_position = position + len(request.events)
        for offset, new in enumerate(request.events, start=1):
            version = versions.get(new.stream_id, 0) + 1
            versions[new.stream_id] = version
            result.after[new.stream_id] = version
            result.rows.append({
                "position": position + offset, "stream_id": new.stream_id, "version": version,
                "type": new.type, "schema_version": new.schema_version, "data": new.data,
                "metadata": request.metadata, "recorded_at": now,
                "commit_position": commit_position,
            })
        if idempotency is not None:
            record = IdempotencyRecord(
                idempotency.key, idempotency.command, idempotency.fingerprint,
                dict(idempotency.result), commit_position,
            )
            known[idempotency.key] = record
            result.command_rows.append(
                {"key": record.key, "command": record.command, "fingerprint": record.fingerprint,
                 "result": record.result, "commit_position": commit_position, "recorded_at": now}
            )
        result.outcomes.append(AppendResult(position + 1, commit_position, now))
        position = commit_position
    return result


class GroupCommitStore(ABC):
    """The append half of the EventStore port; adapters add the transaction and the reads."""

    def __init__(self, schema: EventSchema) -> None:
        self._schema = schema
        self._queue: list[Request] = []  # appends waiting for a writer
        self._writers: set[asyncio.Task[None]] = set()  # alive only while there is work
        self._idle = 0  # writers alive and not writing a group: they share the queue
        self._pipeline = 1
        """Groups in flight at once. One, unless the database itself orders concurrent groups
        (PostgreSQL's append lock): then a second group is sent while the first is written, and
        the commands answered by one group run while the other is in the database."""
        self._listeners: list[AppendListener] = []
        self._recent = RecentCommits()
        self._keep_recent = False  # set by the first read_batch: a projector reads here
        self._sealer = Sealer()

    @abstractmethod
    async def _write_group(self, group: list[Request]) -> Plan:
        """Plan and write `group` in one transaction. Raises StoreUnavailable when the store
        cannot be reached and ForeignWrite on a unique-key violation; nothing is then written."""

    @abstractmethod
    async def _after_erasure(self) -> None:
        """After a group that erased personal data committed: the adapter's file hygiene
        (SQLite: checkpoint the WAL so the deleted key's old pages leave the files)."""

    @abstractmethod
    async def _read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """`read_batch` from the store itself."""

    def on_append(self, listener: AppendListener) -> None:
        self._listeners.append(listener)

    async def append(
        self,
        events: Sequence[NewEvent],
        expected: Mapping[str, int],
        metadata: Mapping[str, Any] | None = None,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        """Queue the append for the writer, which commits every waiting append in one transaction.

        While one transaction is being written and synced, further appends queue up; the writer
        then takes them all and checks each one's expected versions and idempotency key in order
        as the earlier ones of the group leave the store. An append that fails its check is
        refused alone; the others commit. Each append stays all-or-nothing, positions follow
        commit order, and one sync to disk serves many commands.
        """
        missing = {e.stream_id for e in events} - expected.keys()
        if missing or not events:
            raise ValueError(f"an append needs events and expected versions of {missing}")
        request = Request(
            list(events), dict(expected), dict(metadata or {}), idempotency,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(request)
        if len(self._writers) < self._pipeline:
            self._idle += 1
            writer = asyncio.create_task(self._drain(), name="event-store-writer")
            self._writers.add(writer)
        return await request.future

    async def read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """About `limit` events after `after_position`, never splitting one append; this
        process's newest commits come from memory (app/event_store/recent.py) once something
        reads batches here (a process that does not project keeps none)."""
        self._keep_recent = True
        recent = self._recent.batch(after_position, limit)
        if recent is not None:
            return recent
        return await self._read_batch(after_position, limit)

    async def load_stream(self, stream_id: str) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """The snapshot, then the events after it (an adapter that can read both at once does)."""
        snapshot = await self.load_snapshot(stream_id)
        return snapshot, await self.read_stream(stream_id, snapshot.version if snapshot else 0)

    @abstractmethod
    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's snapshot, if one was saved."""

    @abstractmethod
    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The stream's events after `after_version`, in version order, upcast."""

    async def _finish_writes(self) -> None:
        """Wait for the groups being written (for `close`)."""
        if self._writers:
            await asyncio.wait(list(self._writers))

    async def _drain(self) -> None:
        """Write groups of queued appends until the queue is empty (then the task ends). Writers
        about to take a group share the queue between them: with two, 100 waiting appends go
        as two groups of 50, whose commands then take turns with each other's round trips."""
        try:
            while self._queue:
                waiting = len(self._queue)
                share = waiting if waiting < 2 * MIN_SHARE else -(-waiting // self._idle)
                share = min(share, MAX_GROUP)
                group, self._queue = self._queue[:share], self._queue[share:]
                self._idle -= 1
                try:
                    await self._commit_group(group)
                finally:
                    self._idle += 1
        except BaseException:  # cancelled (the loop is closing): nobody will write the rest
            for request in self._queue:
                request.future.cancel()
            self._queue = []
            raise
        finally:  # at once, not in a done callback: an append arriving next starts a writer
            self._idle -= 1
            self._writers.discard(asyncio.current_task())

    async def _commit_group(self, group: list[Request]) -> None:
        """Write one group in one transaction; settle every request's future exactly once."""
        live = [r for r in group if not r.future.cancelled()]
        if not live:
            return
        try:
            written = await self._write_group(live)
        except ForeignWrite as exc:  # a writer outside this protocol raced us
            if len(live) > 1:  # find the one it concerns: the others must not fail with it
                for request in live:
                    await self._commit_group([request])
                return
            failed = ConcurrencyError(live[0].events[0].stream_id, -1, -1)
            failed.__cause__ = exc.__cause__
            self._settle(live, [failed])
            return
        except asyncio.CancelledError as exc:  # the loop is closing
            self._settle(live, [exc] * len(live))
            raise
        except Exception as exc:  # anything else fails this group, not the writer
            self._settle(live, [exc] * len(live))
            return
        if erased_streams(written.rows):  # the commits kept in memory hold personal data
            self._recent.clear()
            try:
                await self._after_erasure()
            except Exception as exc:  # committed: only the files' hygiene is late
                log.warning("file clean-up after an erasure failed: %s", exc)
        if self._keep_recent:
            self._recent.add(self._as_read(row) for row in written.rows)
        self._settle(live, written.outcomes)

    def _as_read(self, row: dict[str, Any]) -> RecordedEvent:
        """A written row as a reader of the store gets it: in its type's current shape."""
        version, data = in_current_shape(self._schema, row["type"], row["schema_version"],
                                         row["data"])
        if version != row["schema_version"]:
            row = {**row, "schema_version": version, "data": data}
        return RecordedEvent(**row)

    def _settle(
        self, group: list[Request], outcomes: Sequence[AppendResult | BaseException]
    ) -> None:
        """Tell the listeners about each committed append (in position order), then the callers."""
        for outcome in outcomes:
            if isinstance(outcome, AppendResult):
                for listener in self._listeners:
                    try:
                        listener(outcome.last_position)
                    except Exception:
                        log.exception("append listener failed")
        for request, outcome in zip(group, outcomes, strict=True):
            if request.future.done():
                continue
            if isinstance(outcome, AppendResult):
                request.future.set_result(outcome)
            elif isinstance(outcome, asyncio.CancelledError):
                request.future.cancel()
            else:
                request.future.set_exception(outcome)
