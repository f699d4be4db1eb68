"""The event-store port: what command handlers and projectors may ask of any implementation."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.domain.schema import EventSchema

JSONDict = dict[str, Any]
AppendListener = Callable[[int], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewEvent:
    stream_id: str
    type: str
    data: JSONDict
    schema_version: int = 1


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: JSONDict
    metadata: JSONDict
    recorded_at: dt.datetime
    commit_position: int
    """Position of the last event of the same append: events up to it commit together."""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    command: str
    fingerprint: str
    result: JSONDict = field(default_factory=dict)
    commit_position: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    first_position: int
    last_position: int
    recorded_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    """The stream version the state is at."""
    state: JSONDict
    schema_version: int = 1
    """The shape of `state` (app/service/repository.py): a reader expecting another ignores it."""


class ConcurrencyError(Exception):
    """A stream was not at the version the append expected; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{stream_id}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DuplicateCommand(Exception):
    """The idempotency key was used before; nothing was written."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__(f"idempotency key {record.key!r} already used")
        self.record = record


class StoreUnavailable(Exception):
    """The event store could not be reached; nothing was written."""


class EventStore(Protocol):
    async def append(
        self,
        events: Sequence[NewEvent],
        expected: Mapping[str, int],
        metadata: Mapping[str, Any] | None = None,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        """Append all events atomically if every stream in `expected` is at its stated version.

        `expected` must name every stream written to (0: the stream must not exist yet) and may
        name streams only read from. Raises ConcurrencyError or DuplicateCommand, writing nothing.
        """
        ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The stream's events after `after_version`, in version order, upcast."""
        ...

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events after `after_position`, in position order, upcast."""
        ...

    async def read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """About `limit` events after `after_position`, never splitting one append."""
        ...

    async def head_position(self) -> int:
        """The position of the newest committed event (0 when empty)."""
        ...

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Current version of each named stream that exists."""
        ...

    async def max_stream_number(self, category: str) -> int:
        """The largest N of existing streams `{category}-N` (0 when none)."""
        ...

    async def find_command(self, key: str) -> IdempotencyRecord | None:
        """The command recorded under an idempotency key, if any."""
        ...

    async def load_snapshot(self, stream_id: str) -> Snapshot | None: ...

    async def load_stream(self, stream_id: str) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """The stream's snapshot and its events after the snapshot's version (all of them when
        there is none), in one read: what loading an aggregate takes."""
        ...

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless the stored one is newer in the same shape (a racing older
        one never replaces it; one of another shape always is)."""
        ...

    async def prune_commands(self, recorded_before: dt.datetime) -> int:
        """Delete the idempotency records of commands recorded before `recorded_before` (an
        aware time); how many went."""
        ...

    def on_append(self, listener: AppendListener) -> None:
        """Call `listener(last_position)` after each committed append of this process."""
        ...

    async def compact(self) -> list[str]:
        """Rewrite the store's files so that no erased value or destroyed key lingers in freed
        space (`python -m app privacy compact`); what was run, for the operator."""
        ...

    async def close(self) -> None: ...


def split_stream_id(stream_id: str) -> tuple[str, int | None]:
    """`location-12` -> (`location`, 12); a stream without a numeric suffix has no number."""
    category, _, suffix = stream_id.rpartition("-")
    if category and suffix.isdigit():
        return category, int(suffix)
    return stream_id, None


def in_current_shape(
    schema: EventSchema, event_type: str, schema_version: int, data: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """A stored event's (schema version, data) in its type's current shape; as stored when an
    upcaster fails on it (a bug, or a row shaped wrongly), so a read never fails for one event:
    the projections then park it (app/projections/batch.py) and the log says which it is."""
    current = schema.current.get(event_type, schema_version)
    if schema_version >= current:
        return schema_version, data
    try:
        return current, schema.upcast(event_type, schema_version, data)
    except Exception as error:  # the class only: a message may quote the data
        log.error("an event of type %s v%d could not be upcast (%s): read as stored",
                  event_type, schema_version, type(error).__name__)
        return schema_version, data
