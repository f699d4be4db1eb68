"""The event store on SQLAlchemy async Core: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Appends are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
lock) and take their positions as head + 1 inside that critical section. So positions are gapless,
position order is commit order (a reader that saw P never later finds a new event below P), and
`recorded_at` is made non-decreasing by taking max(now, last recorded_at).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

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
from app.event_store.tables import commands, events, metadata, snapshots, streams

APPEND_LOCK_KEY = 0x45_56_45_4E_54  # the PostgreSQL advisory lock that serialises appends
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class SqlEventStore:
    """EventStore over one SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, schema: EventSchema) -> None:
        self._engine = engine
        self._schema = schema
        self._sqlite = engine.dialect.name == "sqlite"
        self._lock = asyncio.Lock()  # one in-process writer at a time: no busy-waiting in SQLite
        self._listeners: list[AppendListener] = []

    @classmethod
    async def open(cls, url: str, schema: EventSchema) -> SqlEventStore:
        """Connect, configure the dialect and create the tables if missing."""
        if url.startswith("sqlite"):
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _configure_sqlite(engine)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=10)
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK_KEY)))
            await conn.run_sync(metadata.create_all)
        return cls(engine, schema)

    @property
    def dialect(self) -> str:
        return str(self._engine.dialect.name)

    async def close(self) -> None:
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
        missing = {e.stream_id for e in new_events} - expected.keys()
        if missing or not new_events:
            raise ValueError(f"an append needs events and expected versions of {missing}")
        try:
            async with self._lock, self._engine.connect() as conn:
                conn = await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    result = await self._append(conn, new_events, expected, metadata, idempotency)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        except sa.exc.IntegrityError as exc:  # a writer outside this protocol raced us
            raise ConcurrencyError(new_events[0].stream_id, -1, -1) from exc
        for listener in self._listeners:
            listener(result.last_position)
        return result

    async def _append(
        self,
        conn: AsyncConnection,
        new_events: Sequence[NewEvent],
        expected: Mapping[str, int],
        meta: Mapping[str, Any] | None,
        idempotency: IdempotencyRecord | None,
    ) -> AppendResult:
        if not self._sqlite:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK_KEY)))
        if idempotency is not None:
            previous = await self._find_command(conn, idempotency.key)
            if previous is not None:
                raise DuplicateCommand(previous)
        actual = await self._versions(conn, list(expected))
        for stream_id, version in expected.items():
            if actual.get(stream_id, 0) != version:
                raise ConcurrencyError(stream_id, version, actual.get(stream_id, 0))
        head = (
            await conn.execute(
                sa.select(events.c.position, events.c.recorded_at)
                .order_by(events.c.position.desc())
                .limit(1)
            )
        ).first()
        last_position = head.position if head else 0
        now = dt.datetime.now(dt.UTC)
        if head is not None and utc(head.recorded_at) > now:
            now = utc(head.recorded_at)
        commit_position = last_position + len(new_events)
        versions = dict(expected)
        rows = []
        for offset, new in enumerate(new_events, start=1):
            versions[new.stream_id] += 1
            rows.append(
                {
                    "position": last_position + offset,
                    "stream_id": new.stream_id,
                    "version": versions[new.stream_id],
                    "type": new.type,
                    "schema_version": new.schema_version,
                    "data": new.data,
                    "metadata": dict(meta or {}),
                    "recorded_at": now,
                    "commit_position": commit_position,
                }
            )
        await conn.execute(events.insert(), rows)
        await self._advance_streams(conn, actual, versions, {e.stream_id for e in new_events})
        if idempotency is not None:
            await conn.execute(
                commands.insert().values(
                    key=idempotency.key, command=idempotency.command,
                    fingerprint=idempotency.fingerprint, result=idempotency.result,
                    commit_position=commit_position, recorded_at=now,
                )
            )
        return AppendResult(last_position + 1, commit_position, now)

    async def _advance_streams(
        self,
        conn: AsyncConnection,
        before: Mapping[str, int],
        after: Mapping[str, int],
        written: set[str],
    ) -> None:
        created = [s for s in written if s not in before]
        updated = [s for s in written if s in before]
        if created:
            await conn.execute(
                streams.insert(),
                [
                    {"stream_id": s, "category": split_stream_id(s)[0],
                     "number": split_stream_id(s)[1], "version": after[s]}
                    for s in created
                ],
            )
        for stream_id in updated:
            await conn.execute(
                streams.update()
                .where(streams.c.stream_id == stream_id)
                .values(version=after[stream_id])
            )

    async def _versions(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, int]:
        if not stream_ids:
            return {}
        rows = await conn.execute(
            sa.select(streams.c.stream_id, streams.c.version).where(
                streams.c.stream_id.in_(stream_ids)
            )
        )
        return {row.stream_id: row.version for row in rows}

    async def _find_command(self, conn: AsyncConnection, key: str) -> IdempotencyRecord | None:
        row = (await conn.execute(sa.select(commands).where(commands.c.key == key))).first()
        if row is None:
            return None
        return IdempotencyRecord(
            row.key, row.command, row.fingerprint, dict(row.result), row.commit_position
        )

    async def _select(self, query: sa.Select[Any]) -> list[RecordedEvent]:
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
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

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return await self._select(
            sa.select(events)
            .where(events.c.stream_id == stream_id, events.c.version > after_version)
            .order_by(events.c.version)
        )

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        query = sa.select(events).where(events.c.position > after_position)
        if stream_id is not None:
            query = query.where(events.c.stream_id == stream_id)
        return await self._select(query.order_by(events.c.position).limit(limit))

    async def read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
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

    async def _scalar(self, query: sa.Select[Any]) -> Any:
        try:
            async with self._engine.connect() as conn:
                return (await conn.execute(query)).scalar()
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def head_position(self) -> int:
        return int(await self._scalar(sa.select(sa.func.max(events.c.position))) or 0)

    async def max_stream_number(self, category: str) -> int:
        query = sa.select(sa.func.max(streams.c.number)).where(streams.c.category == category)
        return int(await self._scalar(query) or 0)

    async def stream_versions(self, stream_ids: Sequence[str]) -> dict[str, int]:
        async with self._engine.connect() as conn:
            return await self._versions(conn, list(stream_ids))

    async def find_command(self, key: str) -> IdempotencyRecord | None:
        async with self._engine.connect() as conn:
            return await self._find_command(conn, key)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(snapshots).where(snapshots.c.stream_id == stream_id))
            ).first()
        return Snapshot(row.stream_id, row.version, dict(row.state)) if row else None

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep the newest snapshot of a stream; a racing older one never replaces it."""
        try:
            async with self._engine.begin() as conn:
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
