"""The event store in memory: a test double that passes the same contract suite as the SQL
adapters (tests/integration/test_event_store.py), so command handlers can be tested in
milliseconds. Stores opened on the same `memory://NAME` share one log, like processes sharing a
database; a group is written without awaiting, so it is one atomic step on the event loop.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from app.domain.schema import EventSchema
from app.event_store.base import (
    IdempotencyRecord,
    RecordedEvent,
    Snapshot,
    in_current_shape,
    split_stream_id,
)
from app.event_store.group_commit import (
    GroupCommitStore,
    Plan,
    Request,
    expected_streams,
    idempotency_keys,
    plan,
)
from app.event_store.keys import erased_streams, masked, streams_needing_keys


@dataclass
class MemoryLog:
    """What a database would hold: stored rows (data as stored, upcast on read)."""

    events: list[RecordedEvent] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    commands: dict[str, IdempotencyRecord] = field(default_factory=dict)
    command_times: dict[str, dt.datetime] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


_LOGS: dict[str, MemoryLog] = {}


class MemoryEventStore(GroupCommitStore):
    """EventStore over a MemoryLog."""

    def __init__(self, log: MemoryLog, schema: EventSchema) -> None:
        super().__init__(schema)
        self._log = log

    @classmethod
    async def open(cls, name: str, schema: EventSchema) -> MemoryEventStore:
        """A store on the log called `name` (created empty the first time)."""
        return cls(_LOGS.setdefault(name, MemoryLog()), schema)

    @staticmethod
    def forget(name: str) -> None:
        """Drop the log called `name`."""
        _LOGS.pop(name, None)

    async def close(self) -> None:
        await self._finish_writes()

    async def _write_group(self, group: list[Request]) -> Plan:
        log = self._log
        head = (log.events[-1].position, log.events[-1].recorded_at) if log.events else None
        known = {k: log.commands[k] for k in idempotency_keys(group) if k in log.commands}
        stored = {s: log.versions[s] for s in expected_streams(group) if s in log.versions}
        decided = plan(group, known, stored, head)
        needed = streams_needing_keys(decided.rows)
        sealed, new_keys = self._sealer.seal(
            decided.rows, {s: log.keys[s] for s in needed if s in log.keys}
        )
        log.keys.update(new_keys)
        for row in sealed:  # stored as a database would: a copy, not the caller's dicts
            log.events.append(RecordedEvent(**{**row, "data": copy.deepcopy(row["data"]),
                                               "metadata": dict(row["metadata"])}))
        for stream_id in erased_streams(decided.rows):
            self._erase(stream_id)
        log.versions.update(decided.after)
        for row in decided.command_rows:
            log.commands[row["key"]] = IdempotencyRecord(
                row["key"], row["command"], row["fingerprint"], dict(row["result"]),
                row["commit_position"],
            )
            log.command_times[row["key"]] = row["recorded_at"]
        return decided

    async def _after_erasure(self) -> None:
        """No files."""

    async def compact(self) -> list[str]:
        return []

    def _erase(self, stream_id: str) -> None:
        """Destroy the stream's key and snapshot; mask its plaintext rows in place."""
        log = self._log
        log.keys.pop(stream_id, None)
        log.snapshots.pop(stream_id, None)
        for index, stored in enumerate(log.events):
            if stored.stream_id == stream_id:
                mask = masked(stored.type, stored.data, stored.metadata)
                if mask is not None:
                    log.events[index] = replace(stored, data=mask[0], metadata=mask[1])

    def _read(self, stored: RecordedEvent) -> RecordedEvent:
        """A stored event as a reader gets it: its own copy, opened, upcast."""
        kind, version = stored.type, stored.schema_version
        data = self._sealer.open(kind, stored.stream_id, copy.deepcopy(stored.data),
                                 self._log.keys.get(stored.stream_id))
        version, data = in_current_shape(self._schema, kind, version, data)
        return RecordedEvent(
            stored.position, stored.stream_id, stored.version, kind, version, data,
            dict(stored.metadata), stored.recorded_at, stored.commit_position,
        )

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return [self._read(e) for e in self._log.events
                if e.stream_id == stream_id and e.version > after_version]

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        found = [e for e in self._log.events[after_position:]
                 if stream_id is None or e.stream_id == stream_id]
        return [self._read(e) for e in found[:limit]]

    async def _read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        batch = self._log.events[after_position:after_position + limit]
        if batch:
            batch = self._log.events[after_position:batch[-1].commit_position]
        return [self._read(e) for e in batch]

    async def head_position(self) -> int:
        return self._log.events[-1].position if self._log.events else 0

    async def max_stream_number(self, category: str) -> int:
        numbers = [number for stream in self._log.versions
                   for kind, number in [split_stream_id(stream)]
                   if kind == category and number is not None]
        return max(numbers, default=0)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        return {s: self._log.versions[s] for s in stream_ids if s in self._log.versions}

    async def find_command(self, key: str) -> IdempotencyRecord | None:
        return self._log.commands.get(key)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        snapshot = self._log.snapshots.get(stream_id)
        return None if snapshot is None else copy.deepcopy(snapshot)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = self._log.snapshots.get(stream_id := snapshot.stream_id)
        if (current is None or current.version < snapshot.version
                or current.schema_version != snapshot.schema_version):
            self._log.snapshots[stream_id] = copy.deepcopy(snapshot)

    async def prune_commands(self, recorded_before: dt.datetime) -> int:
        log = self._log
        old = [key for key, at in log.command_times.items() if at < recorded_before]
        for key in old:
            del log.commands[key], log.command_times[key]
        return len(old)
