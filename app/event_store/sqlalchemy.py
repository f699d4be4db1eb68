"""The event store on SQLAlchemy async Core: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Appends are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
lock) and take their positions as head + 1 inside that critical section. So positions are gapless,
position order is commit order (a reader that saw P never later finds a new event below P), and
`recorded_at` is made non-decreasing by taking max(now, last recorded_at).

Group commit: one writer task per store writes every append waiting at that moment in one
transaction (one sync to disk), checking each one's expected versions and idempotency key in
turn, so a stale append fails alone while the others of its group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
    StoreUnavailable,
    split_stream_id,
)
from app.event_store.recent import RecentCommits
from app.event_store.sqlite_file import (
    TIME_FORMAT,
    SqliteFile,
    fetch_events,
    file_of,
    insert_rows,
    select_events,
)
from app.event_store.tables import commands, events, metadata, snapshots, streams

APPEND_LOCK_KEY = 0x45_56_45_4E_54  # the PostgreSQL advisory lock that serialises appends
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, sqlite3.OperationalError)
LOST_SQLSTATES = ("08", "57P")  # connection exception; operator intervention (server shutting down)
try:
    from asyncpg import exceptions as _pg  # type: ignore[import-untyped]

    PG_LOST: tuple[type[BaseException], ...] = (
        _pg.PostgresConnectionError, _pg.OperatorInterventionError, _pg.InternalClientError,
        _pg.InterfaceError,
    )
except ImportError:  # SQLite only
    PG_LOST = ()


def lost_connection(exc: BaseException) -> bool:
    """Whether `exc` means the database went away (a retry later may succeed), not a bad query.

    Besides the DBAPI's OperationalError/InterfaceError, asyncpg reports a server shutting down
    or a connection broken mid-operation as plain DBAPIErrors; its SQLSTATE or cause tells."""
    if isinstance(exc, UNAVAILABLE):
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    return code.startswith(LOST_SQLSTATES) or isinstance(
        getattr(orig, "__cause__", None), PG_LOST
    )
INTEGRITY = (sa.exc.IntegrityError, sqlite3.IntegrityError)


MAX_GROUP = 256  # appends written in one transaction at most
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    """One queued append and the future its caller awaits."""

    events: list[NewEvent]
    expected: dict[str, int]
    metadata: dict[str, Any]
    idempotency: IdempotencyRecord | None
    future: asyncio.Future[AppendResult]


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass
class _Plan:
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


def _plan(
    group: list[_Request],
    known: dict[str, IdempotencyRecord],
    stored: dict[str, int],
    head: tuple[int, dt.datetime] | None,
) -> _Plan:
    """Each request checked and placed in order, as if appended one after the other."""
    position = head[0] if head else 0
    now = dt.datetime.now(dt.UTC)
    if head is not None and head[1] > now:
        now = head[1]
    plan = _Plan(before=dict(stored))
    versions = dict(stored)
    for request in group:
        idempotency = request.idempotency
        if idempotency is not None and idempotency.key in known:
            plan.outcomes.append(DuplicateCommand(known[idempotency.key]))
            continue
        stale = next(((s, v) for s, v in request.expected.items() if versions.get(s, 0) != v), None)
        if stale is not None:
            plan.outcomes.append(ConcurrencyError(stale[0], stale[1], versions.get(stale[0], 0)))
            continue
        commit_position = position + len(request.events)
        for offset, new in enumerate(request.events, start=1):
            version = versions.get(new.stream_id, 0) + 1
            versions[new.stream_id] = version
            plan.after[new.stream_id] = version
            plan.rows.append(
                {
                    "position": position + offset,
                    "stream_id": new.stream_id,
                    "version": version,
                    "type": new.type,
                    "schema_version": new.schema_version,
                    "data": new.data,
                    "metadata": request.metadata,
                    "recorded_at": now,
                    "commit_position": commit_position,
                }
            )
        if idempotency is not None:
            record = IdempotencyRecord(
                idempotency.key, idempotency.command, idempotency.fingerprint,
                dict(idempotency.result), commit_position,
            )
            known[idempotency.key] = record
            plan.command_rows.append(
                {"key": record.key, "command": record.command, "fingerprint": record.fingerprint,
                 "result": record.result, "commit_position": commit_position, "recorded_at": now}
            )
        plan.outcomes.append(AppendResult(position + 1, commit_position, now))
        position = commit_position
    return plan


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class SqlEventStore:
    """EventStore over one SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, schema: EventSchema, direct: bool = True) -> None:
        self._engine = engine
        self._schema = schema
        self._sqlite = engine.dialect.name == "sqlite"
        self._queue: list[_Request] = []  # appends waiting for the writer
        self._writer: asyncio.Task[None] | None = None  # one writer at a time: no busy-waiting
        self._listeners: list[AppendListener] = []
        path = file_of(engine.url.database) if self._sqlite else None
        # SQLite files: hot paths on sqlite3 directly unless `direct` is off (then aiosqlite).
        self._file = SqliteFile(path) if path is not None and direct else None
        self._parsed: tuple[str, dt.datetime] = ("", dt.datetime.min)
        self._recent = RecentCommits()

    @classmethod
    async def open(cls, url: str, schema: EventSchema, direct: bool = True) -> SqlEventStore:
        """Connect, configure the dialect and create the tables if missing.

        `direct`: for an SQLite file, run appends and reads on sqlite3 threads of our own (one
        thread hop per operation) instead of SQLAlchemy + aiosqlite; both write the same rows.
        """
        if url.startswith("sqlite"):
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _configure_sqlite(engine)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=10)
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK_KEY)))
            await conn.run_sync(metadata.create_all)
        return cls(engine, schema, direct)

    @property
    def dialect(self) -> str:
        return str(self._engine.dialect.name)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
        await self._engine.dispose()

    def on_append(self, listener: AppendListener) -> None:
        self._listeners.append(listener)

    async def append(
        self,
        new_events: Sequence[NewEvent],
        expected: Mapping[str, int],
        metadata: Mapping[str, Any] | None = None,
        idempotency: IdempotencyRecord | None = None,
    ) -> AppendResult:
        """Queue the append for the writer, which commits every waiting append in one transaction.

        Group commit: while one transaction is being written and synced, further appends queue
        up; the writer then takes them all and writes them in the next transaction, checking each
        one's expected versions and idempotency key in order against the store as the earlier
        ones of the group leave it. An append that fails its check is refused alone; the others
        commit. So each append is still all-or-nothing, positions still follow commit order, and
        one sync to disk serves many commands.
        """
        missing = {e.stream_id for e in new_events} - expected.keys()
        if missing or not new_events:
            raise ValueError(f"an append needs events and expected versions of {missing}")
        request = _Request(
            list(new_events), dict(expected), dict(metadata or {}), idempotency,
            asyncio.get_running_loop().create_future(),
        )
        self._queue.append(request)
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="event-store-writer")
        return await request.future

    async def _drain(self) -> None:
        """Write groups of queued appends until the queue is empty (then the task ends)."""
        try:
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                await self._commit_group(group)
        except BaseException:  # cancelled (the loop is closing): nobody will write the rest
            for request in self._queue:
                request.future.cancel()
            self._queue = []
            raise
        finally:
            self._writer = None

    async def _commit_group(self, group: list[_Request]) -> None:
        """Write one group in one transaction; settle every request's future exactly once."""
        live = [r for r in group if not r.future.cancelled()]
        if not live:
            return
        try:
            if self._file is not None:
                plan = await self._file.write(lambda conn: self._write_sqlite(conn, live))
            else:
                async with self._engine.connect() as conn:
                    conn = await conn.execution_options(sqlite_immediate=True)
                    async with conn.begin():
                        plan = await self._append_group(conn, live)
        except UNAVAILABLE as exc:
            self._settle(live, [StoreUnavailable(str(exc))] * len(live))
            return
        except INTEGRITY as exc:  # a writer outside this protocol raced us
            if len(live) > 1:  # find the one it concerns: the others must not fail with it
                for request in live:
                    await self._commit_group([request])
                return
            failed = ConcurrencyError(live[0].events[0].stream_id, -1, -1)
            failed.__cause__ = exc
            self._settle(live, [failed])
            return
        except asyncio.CancelledError as exc:  # the loop is closing
            self._settle(live, [exc] * len(live))
            raise
        except Exception as exc:  # anything else fails this group, not the writer
            if lost_connection(exc):
                exc = StoreUnavailable(str(exc))
            self._settle(live, [exc] * len(live))
            return
        self._recent.add(RecordedEvent(**row) for row in plan.rows)
        self._settle(live, plan.outcomes)

    def _settle(
        self, group: list[_Request], outcomes: Sequence[AppendResult | BaseException]
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

    async def _append_group(self, conn: AsyncConnection, group: list[_Request]) -> _Plan:
        """The group through SQLAlchemy (PostgreSQL; SQLite in memory)."""
        if not self._sqlite:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK_KEY)))
        keys = [r.idempotency.key for r in group if r.idempotency is not None]
        known = await self._find_commands(conn, keys)
        stored = await self._versions(conn, list({s: None for r in group for s in r.expected}))
        head = (
            await conn.execute(
                sa.select(events.c.position, events.c.recorded_at)
                .order_by(events.c.position.desc())
                .limit(1)
            )
        ).first()
        plan = _plan(group, known, stored, (head.position, utc(head.recorded_at)) if head else None)
        if plan.rows:
            await conn.execute(events.insert(), plan.rows)
            await self._advance_streams(conn, plan)
        if plan.command_rows:
            await conn.execute(commands.insert(), plan.command_rows)
        return plan

    def _write_sqlite(self, conn: sqlite3.Connection, group: list[_Request]) -> _Plan:
        """The group on the SQLite writer thread, inside its BEGIN IMMEDIATE transaction."""
        known: dict[str, IdempotencyRecord] = {}
        keys = [r.idempotency.key for r in group if r.idempotency is not None]
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, command, fingerprint, result, commit_position in conn.execute(
                "SELECT key, command, fingerprint, result, commit_position FROM idempotency_keys"
                f" WHERE key IN ({marks})", chunk,
            ):
                known[key] = IdempotencyRecord(
                    key, command, fingerprint, orjson.loads(result), commit_position
                )
        stored: dict[str, int] = {}
        for chunk in _chunks(list({s: None for r in group for s in r.expected})):
            marks = ",".join("?" * len(chunk))
            (found,) = conn.execute(  # one row, one step (see app/event_store/sqlite_file.py)
                "SELECT json_group_object(stream_id, version) FROM streams"
                f" WHERE stream_id IN ({marks})", chunk,
            ).fetchone()
            stored.update(orjson.loads(found))
        last = conn.execute(
            "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        plan = _plan(group, known, stored, (last[0], self._time(last[1])) if last else None)
        if plan.rows:
            recorded = plan.rows[0]["recorded_at"].strftime(TIME_FORMAT)  # one time per group
            insert_rows(
                conn, "INSERT INTO events (position, stream_id, version, type, schema_version,"
                " data, metadata, recorded_at, commit_position) VALUES",
                [(r["position"], r["stream_id"], r["version"], r["type"], r["schema_version"],
                  orjson.dumps(r["data"]).decode(), orjson.dumps(r["metadata"]).decode(),
                  recorded, r["commit_position"])
                 for r in plan.rows],
            )
            changed = [*plan.created(), *plan.updated()]
            insert_rows(
                conn, "INSERT INTO streams (stream_id, category, number, version) VALUES",
                [(s, *split_stream_id(s), plan.after[s]) for s in changed],
                " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
            )
        if plan.command_rows:
            insert_rows(
                conn, "INSERT INTO idempotency_keys (key, command, fingerprint, result,"
                " commit_position, recorded_at) VALUES",
                [(r["key"], r["command"], r["fingerprint"], orjson.dumps(r["result"]).decode(),
                  r["commit_position"], r["recorded_at"].strftime(TIME_FORMAT))
                 for r in plan.command_rows],
            )
        return plan

    async def _advance_streams(self, conn: AsyncConnection, plan: _Plan) -> None:
        created, updated = plan.created(), plan.updated()
        if created:
            await conn.execute(
                streams.insert(),
                [
                    {"stream_id": s, "category": split_stream_id(s)[0],
                     "number": split_stream_id(s)[1], "version": plan.after[s]}
                    for s in created
                ],
            )
        if updated:
            await conn.execute(
                streams.update()
                .where(streams.c.stream_id == sa.bindparam("b_stream_id"))
                .values(version=sa.bindparam("b_version")),
                [{"b_stream_id": s, "b_version": plan.after[s]} for s in updated],
            )

    async def _versions(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(stream_ids):
            rows = await conn.execute(
                sa.select(streams.c.stream_id, streams.c.version).where(
                    streams.c.stream_id.in_(chunk)
                )
            )
            found.update((row.stream_id, row.version) for row in rows)
        return found

    async def _find_commands(
        self, conn: AsyncConnection, keys: list[str]
    ) -> dict[str, IdempotencyRecord]:
        found: dict[str, IdempotencyRecord] = {}
        for chunk in _chunks(keys):
            rows = await conn.execute(sa.select(commands).where(commands.c.key.in_(chunk)))
            for row in rows:
                found[row.key] = IdempotencyRecord(
                    row.key, row.command, row.fingerprint, dict(row.result), row.commit_position
                )
        return found

    async def _find_command(self, conn: AsyncConnection, key: str) -> IdempotencyRecord | None:
        row = (await conn.execute(sa.select(commands).where(commands.c.key == key))).first()
        if row is None:
            return None
        return IdempotencyRecord(
            row.key, row.command, row.fingerprint, dict(row.result), row.commit_position
        )

    @contextlib.asynccontextmanager
    async def _sql(self, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection (in a transaction with `begin`); a lost database raises
        StoreUnavailable."""
        try:
            async with self._engine.begin() if begin else self._engine.connect() as conn:
                yield conn
        except Exception as exc:
            if lost_connection(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def _select(self, query: sa.Select[Any]) -> list[RecordedEvent]:
        async with self._sql() as conn:
            rows = (await conn.execute(query)).all()
        return [self._recorded(row) for row in rows]

    def _recorded(self, row: sa.Row[Any]) -> RecordedEvent:
        return RecordedEvent(
            position=row.position,
            stream_id=row.stream_id,
            version=row.version,
            type=row.type,
            schema_version=self._schema.current.get(row.type, row.schema_version),
            data=self._schema.upcast(row.type, row.schema_version, dict(row.data)),
            metadata=dict(row.metadata),
            recorded_at=utc(row.recorded_at),
            commit_position=row.commit_position,
        )

    def _time(self, stored: str) -> dt.datetime:
        """A stored SQLite time as an aware UTC datetime (the events of a commit share one)."""
        cached = self._parsed  # one tuple, read once: the writer thread uses this too
        if stored != cached[0]:
            cached = (stored, dt.datetime.fromisoformat(stored + "+00:00"))
            self._parsed = cached
        return cached[1]

    def _from_row(self, row: list[Any]) -> RecordedEvent:
        """A row of `fetch_events` (EVENT_COLUMNS order, JSON decoded) as a RecordedEvent,
        upcast."""
        position, stream_id, version, kind, schema_version, payload, meta, recorded, commit = row
        current = self._schema.current.get(kind, schema_version)
        if schema_version < current:
            payload = self._schema.upcast(kind, schema_version, payload)
        return RecordedEvent(
            position, stream_id, version, kind, current, payload, meta, self._time(recorded),
            commit,
        )

    async def _raw_events(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        assert self._file is not None
        try:
            rows = await self._file.read(lambda conn: fetch_events(conn, sql, params))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [self._from_row(row) for row in rows]

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        if self._file is not None:
            return await self._raw_events(
                select_events("stream_id = ? AND version > ?", "version"),
                (stream_id, after_version),
            )
        return await self._select(
            sa.select(events)
            .where(events.c.stream_id == stream_id, events.c.version > after_version)
            .order_by(events.c.version)
        )

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        if self._file is not None:
            if stream_id is None:
                return await self._raw_events(
                    select_events("position > ?", limit=True), (after_position, limit)
                )
            return await self._raw_events(
                select_events("position > ? AND stream_id = ?", limit=True),
                (after_position, stream_id, limit),
            )
        query = sa.select(events).where(events.c.position > after_position)
        if stream_id is not None:
            query = query.where(events.c.stream_id == stream_id)
        return await self._select(query.order_by(events.c.position).limit(limit))

    async def read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        recent = self._recent.batch(after_position, limit)
        if recent is not None:
            return recent
        if self._file is not None:
            return await self._raw_batch(after_position, limit)
        batch = await self.read_all(after_position, limit)
        if batch and batch[-1].commit_position > batch[-1].position:
            last = batch[-1]
            batch += await self._select(
                sa.select(events)
                .where(
                    events.c.position > last.position,
                    events.c.position <= last.commit_position,
                )
                .order_by(events.c.position)
            )
        return batch

    async def _raw_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        """One read: the batch, plus the rest of its last append (index 8: commit_position)."""
        assert self._file is not None

        def work(conn: sqlite3.Connection) -> list[RecordedEvent]:
            rows = fetch_events(conn, select_events("position > ?", limit=True),
                                (after_position, limit))
            if rows and rows[-1][8] > rows[-1][0]:
                rows += fetch_events(conn, select_events("position > ? AND position <= ?"),
                                     (rows[-1][0], rows[-1][8]))
            # decoded here: the event loop goes on meanwhile (a projector writing its last batch)
            return [self._from_row(row) for row in rows]

        try:
            return await self._file.read(work)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _scalar(self, query: sa.Select[Any]) -> Any:
        async with self._sql() as conn:
            return (await conn.execute(query)).scalar()

    async def head_position(self) -> int:
        return int(await self._scalar(sa.select(sa.func.max(events.c.position))) or 0)

    async def max_stream_number(self, category: str) -> int:
        query = sa.select(sa.func.max(streams.c.number)).where(streams.c.category == category)
        return int(await self._scalar(query) or 0)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        async with self._sql() as conn:
            return await self._versions(conn, list(stream_ids))

    async def find_command(self, key: str) -> IdempotencyRecord | None:
        async with self._sql() as conn:
            return await self._find_command(conn, key)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        if self._file is not None:
            try:
                row = await self._file.read(lambda conn: conn.execute(
                    "SELECT version, state FROM snapshots WHERE stream_id = ?", (stream_id,)
                ).fetchone())
            except UNAVAILABLE as exc:
                raise StoreUnavailable(str(exc)) from exc
            return Snapshot(stream_id, row[0], orjson.loads(row[1])) if row else None
        async with self._sql() as conn:
            row = (
                await conn.execute(sa.select(snapshots).where(snapshots.c.stream_id == stream_id))
            ).first()
        return Snapshot(row.stream_id, row.version, dict(row.state)) if row else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep the newest snapshot of a stream; a racing older one never replaces it."""
        try:
            async with self._sql(begin=True) as conn:
                updated = await conn.execute(
                    snapshots.update()
                    .where(
                        snapshots.c.stream_id == snapshot.stream_id,
                        snapshots.c.version < snapshot.version,
                    )
                    .values(version=snapshot.version, state=snapshot.state)
                )
                if updated.rowcount == 0:
                    exists = await conn.execute(
                        sa.select(snapshots.c.version).where(
                            snapshots.c.stream_id == snapshot.stream_id
                        )
                    )
                    if exists.first() is None:
                        await conn.execute(
                            snapshots.insert().values(
                                stream_id=snapshot.stream_id,
                                version=snapshot.version,
                                state=snapshot.state,
                            )
                        )
        except sa.exc.IntegrityError:
            pass  # another process saved a snapshot of the same stream at the same moment


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers; our own BEGIN so appends can take the write lock up front."""

    @sa_event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: SyncConnection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
