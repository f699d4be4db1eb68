"""The event store on an SQLite file through the standard `sqlite3` module, one thread hop per
operation: the default for `sqlite+aiosqlite:///FILE` (SQLITE_DIRECT).

Through SQLAlchemy + aiosqlite every statement costs several hops between the event loop and the
driver's thread, plus SQLAlchemy's per-row type processing; an append took ~6 ms and reading a
projection batch spent most of its time converting rows. Here a read is one call on a reader
thread, and a group commit's statements run on the event loop with only its COMMIT on a writer
thread.

Where each call runs, and why, is app/event_store/sqlite_threads.py. Each table is read and
written in one statement of one step (multi-row VALUES, one JSON row for the versions looked
up, events read as one JSON row): `sqlite3` gives up and takes back the GIL around every step,
which costs while the event loop is busy. Needs SQLite 3.38+ (JSON built in).

Rows are stored exactly as SQLAlchemy stores them (JSON text, `YYYY-MM-DD HH:MM:SS.ffffff` UTC
times), so both adapters read each other's files; the tables themselves are made by the
migrations (app/event_store/migrations/), which run when the store opens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson

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
from app.event_store.keys import SEALED_TYPES, erased_streams, masked, streams_needing_keys
from app.event_store.migrations import upgrade_file
from app.event_store.sqlite_threads import SqliteThreads

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format
ROWS_PER_STATEMENT = 256  # multi-row VALUES: 256 × 9 columns stays far below SQLite's 32 766
STATEMENTS = 2 * ROWS_PER_STATEMENT + 64  # prepared statements kept: every multi-row shape
IN_LIST = 500  # values per IN (…) list
COMMIT_ROW = 8  # index of commit_position in a row of `_events`
PRUNE_ROWS = 5000  # idempotency records deleted per transaction: appends wait for no longer


def file_of(database: str | None) -> str | None:
    """The file of an SQLite URL's database, or None for an in-memory database."""
    if not database or database == ":memory:" or "mode=memory" in database:
        return None
    return database


def insert_rows(
    conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[object, ...]], tail: str = ""
) -> None:
    """`insert` ("INSERT INTO t (a, b) VALUES") of `rows`, ROWS_PER_STATEMENT per statement:
    one step each, where `executemany` takes one step (and one GIL hand-over) per row."""
    if not rows:
        return
    marks = "(" + ",".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        part = rows[start:start + ROWS_PER_STATEMENT]
        conn.execute(f"{insert} {','.join([marks] * len(part))}{tail}",
                     [value for row in part for value in row])


SEALED_IN = ",".join(f"'{kind}'" for kind in SEALED_TYPES)


def select_events(where: str, order: str = "position", limit: bool = False) -> str:
    """The events matching `where`, as one row holding one JSON array (see `_events`), each
    with the personal-data key of its stream when its type may be sealed (null: none, erased)."""
    rows = ("SELECT position, stream_id, version, type, schema_version, data, metadata,"
            f" recorded_at, commit_position FROM events WHERE {where} ORDER BY {order}"
            + (" LIMIT ?" if limit else ""))
    return (
        "SELECT json_group_array(json_array(position, stream_id, version, type, schema_version,"
        " json(data), json(metadata), recorded_at, commit_position,"
        f" CASE WHEN type IN ({SEALED_IN}) THEN (SELECT key FROM personal_data_keys k"
        f" WHERE k.stream_id = r.stream_id) END)) FROM ({rows}) r"
    )


STREAM = select_events("stream_id = ? AND version > ?", "version")
"""A stream's events after a version, in version order."""


def _events(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[Any]:
    """The rows of a `select_events` query, data and metadata decoded, in position order: one
    step (one GIL hand-over) for the whole answer, not one per row."""
    (text,) = conn.execute(sql, params).fetchone()
    rows: list[Any] = orjson.loads(text)
    rows.sort(key=itemgetter(0))  # the order an aggregate sees its rows in is SQLite's choice
    return rows


def _in(values: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`(marks, chunk)` pairs for IN lists of at most IN_LIST values."""
    return [(",".join("?" * len(part)), list(part))
            for part in (values[i:i + IN_LIST] for i in range(0, len(values), IN_LIST))]


def _commands(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, IdempotencyRecord]:
    found: dict[str, IdempotencyRecord] = {}
    for marks, chunk in _in(keys):
        for key, command, fingerprint, result, commit_position in conn.execute(
            "SELECT key, command, fingerprint, result, commit_position FROM idempotency_keys"
            f" WHERE key IN ({marks})", chunk,
        ):
            found[key] = IdempotencyRecord(
                key, command, fingerprint, orjson.loads(result), commit_position
            )
    return found


def _keys(conn: sqlite3.Connection, stream_ids: Sequence[str]) -> dict[str, str]:
    """The stored personal-data keys of the named streams."""
    found: dict[str, str] = {}
    for marks, chunk in _in(stream_ids):
        found.update(conn.execute(
            f"SELECT stream_id, key FROM personal_data_keys WHERE stream_id IN ({marks})", chunk
        ).fetchall())
    return found


def _erase(conn: sqlite3.Connection, stream_ids: Sequence[str]) -> None:
    """Inside the transaction appending their erasure: destroy the streams' keys, drop their
    snapshots and mask the personal fields of their plaintext rows (see app/event_store/keys.py)."""
    for stream_id in stream_ids:
        conn.execute("DELETE FROM personal_data_keys WHERE stream_id = ?", (stream_id,))
        conn.execute("DELETE FROM snapshots WHERE stream_id = ?", (stream_id,))
        rows = conn.execute(
            f"SELECT position, type, data, metadata FROM events WHERE stream_id = ?"
            f" AND type IN ({SEALED_IN})", (stream_id,),
        ).fetchall()
        for position, kind, data, meta in rows:
            mask = masked(kind, orjson.loads(data), orjson.loads(meta))
            if mask is not None:
                conn.execute("UPDATE events SET data = ?, metadata = ? WHERE position = ?",
                             (orjson.dumps(mask[0]).decode(), orjson.dumps(mask[1]).decode(),
                              position))


def _snapshot(conn: sqlite3.Connection, stream_id: str) -> Snapshot | None:
    row = conn.execute(
        "SELECT version, state, schema_version FROM snapshots WHERE stream_id = ?", (stream_id,)
    ).fetchone()
    return Snapshot(stream_id, row[0], orjson.loads(row[1]), row[2]) if row else None


def _versions(conn: sqlite3.Connection, stream_ids: Sequence[str]) -> dict[str, int]:
    stored: dict[str, int] = {}
    for marks, chunk in _in(stream_ids):
        (found,) = conn.execute(  # one row, one step
            "SELECT json_group_object(stream_id, version) FROM streams"
            f" WHERE stream_id IN ({marks})",
            chunk,
        ).fetchone()
        stored.update(orjson.loads(found))
    return stored


class SqliteEventStore(GroupCommitStore):
    """EventStore over one SQLite file on sqlite3 threads of its own."""

    def __init__(self, path: str, schema: EventSchema) -> None:
        super().__init__(schema)
        self._file = SqliteThreads(path, STATEMENTS)
        self._parsed: tuple[str, dt.datetime] = ("", dt.datetime.min)

    @classmethod
    async def open(cls, path: str, schema: EventSchema) -> SqliteEventStore:
        """The store on the file at `path`, created if missing and migrated to the newest
        schema (WAL mode, so readers never wait for the writer)."""
        await asyncio.to_thread(upgrade_file, path)
        return cls(path, schema)

    async def close(self) -> None:
        await self._finish_writes()
        await asyncio.to_thread(self._file.close)

    async def _write_group(self, group: list[Request]) -> Plan:
        return await self._file.append(lambda conn: self._write(conn, group))

    async def compact(self) -> list[str]:
        """VACUUM (a new file without free pages), then empty the WAL."""
        await self._file.run("VACUUM")
        await self._file.checkpoint()
        return ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]

    async def _after_erasure(self) -> None:
        """Copy the WAL into the database file and truncate it: the pages that held the
        destroyed key and the masked values (overwritten there, `secure_delete`) go for good."""
        await self._file.checkpoint()

    def _write(self, conn: sqlite3.Connection, group: list[Request]) -> Plan:
        """The group on the event loop, inside its BEGIN IMMEDIATE transaction (`append`)."""
        last = conn.execute(
            "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        decided = plan(group, _commands(conn, idempotency_keys(group)),
                       _versions(conn, expected_streams(group)),
                       (last[0], self._time(last[1])) if last else None)
        if decided.rows:
            recorded = decided.rows[0]["recorded_at"].strftime(TIME_FORMAT)  # one per group
            stored, new_keys = self._sealer.seal(
                decided.rows, _keys(conn, streams_needing_keys(decided.rows))
            )
            insert_rows(conn, "INSERT INTO personal_data_keys (stream_id, key) VALUES", new_keys)
            insert_rows(
                conn, "INSERT INTO events (position, stream_id, version, type, schema_version,"
                " data, metadata, recorded_at, commit_position) VALUES",
                [(r["position"], r["stream_id"], r["version"], r["type"], r["schema_version"],
                  orjson.dumps(r["data"]).decode(), orjson.dumps(r["metadata"]).decode(),
                  recorded, r["commit_position"])
                 for r in stored],
            )
            _erase(conn, erased_streams(decided.rows))
            insert_rows(
                conn, "INSERT INTO streams (stream_id, category, number, version) VALUES",
                [(s, *split_stream_id(s), decided.after[s]) for s in decided.changed()],
                " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
            )
        insert_rows(
            conn, "INSERT INTO idempotency_keys (key, command, fingerprint, result,"
            " commit_position, recorded_at) VALUES",
            [(r["key"], r["command"], r["fingerprint"], orjson.dumps(r["result"]).decode(),
              r["commit_position"], r["recorded_at"].strftime(TIME_FORMAT))
             for r in decided.command_rows],
        )
        return decided

    def _time(self, stored: str) -> dt.datetime:
        """A stored time as an aware UTC datetime (the events of a commit share one)."""
        cached = self._parsed  # one tuple, read once
        if stored != cached[0]:
            cached = (stored, dt.datetime.fromisoformat(stored + "+00:00"))
            self._parsed = cached
        return cached[1]

    def _recorded(self, row: list[Any]) -> RecordedEvent:
        """A row of `_events` as a RecordedEvent, upcast."""
        (position, stream_id, version, kind, schema_version, payload, meta, recorded, commit,
         key) = row
        payload = self._sealer.open(kind, stream_id, payload, key)
        schema_version, payload = in_current_shape(self._schema, kind, schema_version, payload)
        return RecordedEvent(
            position, stream_id, version, kind, schema_version, payload, meta,
            self._time(recorded), commit,
        )

    async def _select(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        rows = await self._file.read(lambda conn: _events(conn, sql, params))
        return [self._recorded(row) for row in rows]

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return await self._select(STREAM, (stream_id, after_version))

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        if stream_id is None:
            return await self._select(select_events("position > ?", limit=True),
                                      (after_position, limit))
        return await self._select(select_events("position > ? AND stream_id = ?", limit=True),
                                  (after_position, stream_id, limit))

    async def _read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """One read: the batch, plus the rest of its last append."""

        def work(conn: sqlite3.Connection) -> list[RecordedEvent]:
            rows = _events(conn, select_events("position > ?", limit=True),
                           (after_position, limit))
            if rows and rows[-1][COMMIT_ROW] > rows[-1][0]:
                rows += _events(conn, select_events("position > ? AND position <= ?"),
                                (rows[-1][0], rows[-1][COMMIT_ROW]))
            # decoded here: the event loop goes on meanwhile (a projector writing its last batch)
            return [self._recorded(row) for row in rows]

        return await self._file.read(work)

    async def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return await self._file.read(lambda conn: conn.execute(sql, params).fetchone()[0])

    async def head_position(self) -> int:
        return int(await self._scalar("SELECT max(position) FROM events") or 0)

    async def max_stream_number(self, category: str) -> int:
        return int(await self._scalar(
            "SELECT max(number) FROM streams WHERE category = ?", (category,)) or 0)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        return await self._file.read(lambda conn: _versions(conn, stream_ids))

    async def find_command(self, key: str) -> IdempotencyRecord | None:
        return (await self._file.read(lambda conn: _commands(conn, [key]))).get(key)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self._file.read(lambda conn: _snapshot(conn, stream_id))

    async def load_stream(self, stream_id: str) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """One trip to the reader thread, not two (a cold aggregate's command waits for it)."""

        def work(conn: sqlite3.Connection) -> tuple[Snapshot | None, list[RecordedEvent]]:
            snapshot = _snapshot(conn, stream_id)
            rows = _events(conn, STREAM, (stream_id, snapshot.version if snapshot else 0))
            return snapshot, [self._recorded(row) for row in rows]

        return await self._file.read(work)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._file.write(lambda conn: conn.execute(
            "INSERT INTO snapshots (stream_id, version, state, schema_version) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state, schema_version = excluded.schema_version"
            " WHERE excluded.version > snapshots.version"
            " OR excluded.schema_version <> snapshots.schema_version",
            (snapshot.stream_id, snapshot.version, orjson.dumps(snapshot.state).decode(),
             snapshot.schema_version),
        ))

    async def prune_commands(self, recorded_before: dt.datetime) -> int:
        before = recorded_before.astimezone(dt.UTC).strftime(TIME_FORMAT)
        pruned = 0
        while True:  # a transaction per slice: appends wait for one slice at most
            count: int = await self._file.write(lambda conn: conn.execute(
                "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
                " WHERE recorded_at < ? LIMIT ?)", (before, PRUNE_ROWS),
            ).rowcount)
            pruned += count
            if count < PRUNE_ROWS:
                return pruned
