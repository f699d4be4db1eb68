"""The event store on SQLAlchemy async Core: PostgreSQL (asyncpg), and SQLite through aiosqlite.

Appends go through the group commit (app/event_store/group_commit.py). On PostgreSQL a group is
one call of a server-side function that takes a transaction-scoped advisory lock, checks and writes
(app/event_store/pg_append.py), and two groups may be in flight at once; on SQLite it is one
BEGIN IMMEDIATE transaction. Either way positions are taken as head + 1 under the append lock,
by one group at a time. The engine, the schema check at open and which errors mean a lost
database are app/event_store/sqlalchemy_engine.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain.schema import EventSchema
from app.event_store.base import (
    IdempotencyRecord,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
    in_current_shape,
    split_stream_id,
)
from app.event_store.group_commit import (
    ForeignWrite,
    GroupCommitStore,
    Plan,
    Request,
    expected_streams,
    idempotency_keys,
    plan,
)
from app.event_store.keys import (
    SEALED_TYPES,
    erased_streams,
    masked,
    streams_needing_keys,
)
from app.event_store.pg_append import PgAppender
from app.event_store.sqlalchemy_engine import (
    FOREIGN,
    create_engine,
    lost_connection,
    prepare_schema,
)
from app.event_store.sqlite import PRUNE_ROWS
from app.event_store.tables import (
    commands,
    events,
    personal_data_keys,
    snapshots,
    streams,
)


def chunks(items: list[str], size: int = 500) -> list[list[str]]:
    """`items` in slices small enough for one IN list."""
    return [items[i:i + size] for i in range(0, len(items), size)]


async def by_stream(conn: AsyncConnection, column: Any, stream_ids: list[str]) -> dict[str, Any]:
    """`column` of the rows of its table whose stream_id is one of `stream_ids`, by stream id
    (asked in chunks, within the drivers' bound on parameters)."""
    table = column.table
    found: dict[str, Any] = {}
    for chunk in chunks(stream_ids):
        rows = await conn.execute(
            sa.select(table.c.stream_id, column).where(table.c.stream_id.in_(chunk))
        )
        found.update((row[0], row[1]) for row in rows)
    return found


async def _snapshot(conn: AsyncConnection, stream_id: str) -> Snapshot | None:
    query = sa.select(snapshots).where(snapshots.c.stream_id == stream_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return Snapshot(row.stream_id, row.version, dict(row.state), row.schema_version)


def _stream(stream_id: str, after_version: int) -> sa.Select[Any]:
    """A stream's events after `after_version`, in version order."""
    return (sa.select(events)
            .where(events.c.stream_id == stream_id, events.c.version > after_version)
            .order_by(events.c.version))


def utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class SqlAlchemyEventStore(GroupCommitStore):
    """EventStore over one SQLAlchemy async engine."""

    def __init__(self, engine: AsyncEngine, schema: EventSchema) -> None:
        super().__init__(schema)
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._appender = PgAppender(engine, self._sealer, self._erase) if self._postgres else None
        if self._appender is not None:
            self._pipeline = 2

    @classmethod
    async def open(cls, url: str, schema: EventSchema) -> SqlAlchemyEventStore:
        """Connect, configure the dialect and make sure of the schema (`prepare_schema`)."""
        engine = create_engine(url)
        try:
            await prepare_schema(url, engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, schema)

    async def close(self) -> None:
        await self._finish_writes()
        if self._appender is not None:
            await self._appender.close()
        await self.engine.dispose()

    async def _write_group(self, group: list[Request]) -> Plan:
        try:
            if self._appender is not None:
                return await self._appender.write(group)
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(sqlite_immediate=True)
                async with conn.begin():
                    return await self._append_group(conn, group)
        except FOREIGN as exc:
            raise ForeignWrite(str(exc)) from exc
        except Exception as exc:
            if lost_connection(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def _append_group(self, conn: AsyncConnection, group: list[Request]) -> Plan:
        """SQLite (in BEGIN IMMEDIATE): look up, plan, seal and write the group."""
        known = await self._find_commands(conn, idempotency_keys(group))
        stored = await self._versions(conn, expected_streams(group))
        head = (
            await conn.execute(
                sa.select(events.c.position, events.c.recorded_at)
                .order_by(events.c.position.desc())
                .limit(1)
            )
        ).first()
        decided = plan(group, known, stored,
                       (head.position, utc(head.recorded_at)) if head else None)
        if decided.rows:
            sealed, new_keys = self._sealer.seal(
                decided.rows, await self._keys(conn, streams_needing_keys(decided.rows))
            )
            if new_keys:
                await conn.execute(personal_data_keys.insert(),
                                   [{"stream_id": s, "key": k} for s, k in new_keys])
            await conn.execute(events.insert(), sealed)
            await self._advance_streams(conn, decided)
            for stream_id in erased_streams(decided.rows):
                await self._erase(conn, stream_id)
        if decided.command_rows:
            await conn.execute(commands.insert(), decided.command_rows)
        return decided

    async def _advance_streams(self, conn: AsyncConnection, decided: Plan) -> None:
        created, updated = decided.created(), decided.updated()
        if created:
            await conn.execute(streams.insert(), [
                {"stream_id": s, "category": split_stream_id(s)[0],
                 "number": split_stream_id(s)[1], "version": decided.after[s]}
                for s in created
            ])
        if updated:
            await conn.execute(
                streams.update()
                .where(streams.c.stream_id == sa.bindparam("b_stream_id"))
                .values(version=sa.bindparam("b_version")),
                [{"b_stream_id": s, "b_version": decided.after[s]} for s in updated],
            )

    async def _keys(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, str]:
        return await by_stream(conn, personal_data_keys.c.key, stream_ids)

    async def _erase(self, conn: AsyncConnection, stream_id: str) -> None:
        """Inside the transaction appending the erasure: destroy the stream's key, drop its
        snapshot and mask its plaintext rows (see app/event_store/keys.py)."""
        await conn.execute(
            personal_data_keys.delete().where(personal_data_keys.c.stream_id == stream_id))
        await conn.execute(snapshots.delete().where(snapshots.c.stream_id == stream_id))
        rows = await conn.execute(
            sa.select(events.c.position, events.c.type, events.c.data, events.c.metadata)
            .where(events.c.stream_id == stream_id, events.c.type.in_(SEALED_TYPES))
        )
        for row in rows.all():
            mask = masked(row.type, dict(row.data), dict(row.metadata))
            if mask is not None:
                await conn.execute(events.update().where(events.c.position == row.position)
                                   .values(data=mask[0], metadata=mask[1]))

    async def compact(self) -> list[str]:
        """PostgreSQL: VACUUM FULL of the tables an erasure deletes from or updates (a new
        file each, without the dead rows); SQLite: VACUUM and an emptied WAL."""
        if self._postgres:
            statements = [f"VACUUM FULL {table.name}"
                          for table in (personal_data_keys, events, snapshots)]
        else:
            statements = ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"]
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await conn.exec_driver_sql(statement)
        return statements

    async def _after_erasure(self) -> None:
        """SQLite: copy the WAL into the database file and truncate it (see sqlite.py)."""
        if not self._postgres:
            async with self._sql() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _versions(self, conn: AsyncConnection, stream_ids: list[str]) -> dict[str, int]:
        return await by_stream(conn, streams.c.version, stream_ids)

    async def _find_commands(
        self, conn: AsyncConnection, keys: list[str]
    ) -> dict[str, IdempotencyRecord]:
        found: dict[str, IdempotencyRecord] = {}
        for chunk in chunks(keys):
            for row in await conn.execute(sa.select(commands).where(commands.c.key.in_(chunk))):
                found[row.key] = IdempotencyRecord(
                    row.key, row.command, row.fingerprint, dict(row.result), row.commit_position
                )
        return found

    @contextlib.asynccontextmanager
    async def _sql(self, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection (in a transaction with `begin`, else in autocommit: each read is
        one statement, or chunks that need no common snapshot, so a BEGIN and a ROLLBACK would be
        two round trips for nothing); a lost database raises StoreUnavailable."""
        try:
            async with self.engine.begin() if begin else self.engine.connect() as conn:
                if not begin:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except Exception as exc:
            if lost_connection(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    async def _select(self, query: sa.Select[Any]) -> list[RecordedEvent]:
        """`query`'s events (`_with_keys`)."""
        async with self._sql() as conn:
            rows = (await conn.execute(self._with_keys(query))).all()
        return [self._recorded(row) for row in rows]

    @staticmethod
    def _with_keys(query: sa.Select[Any]) -> sa.Select[Any]:
        """`query` with each event's stream's personal-data key when its type may be sealed
        (the same statement: a key deleted meanwhile is never used)."""
        stored_key = (
            sa.select(personal_data_keys.c.key)
            .where(personal_data_keys.c.stream_id == events.c.stream_id)
            .scalar_subquery()
        )
        return query.add_columns(
            sa.case((events.c.type.in_(SEALED_TYPES), stored_key)).label("personal_key")
        )

    def _recorded(self, row: sa.Row[Any]) -> RecordedEvent:
        data = self._sealer.open(row.type, row.stream_id, dict(row.data), row.personal_key)
        schema_version, data = in_current_shape(self._schema, row.type, row.schema_version, data)
        return RecordedEvent(
            position=row.position,
            stream_id=row.stream_id,
            version=row.version,
            type=row.type,
            schema_version=schema_version,
            data=data,
            metadata=dict(row.metadata),
            recorded_at=utc(row.recorded_at),
            commit_position=row.commit_position,
        )

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return await self._select(_stream(stream_id, after_version))

    async def read_all(
        self, after_position: int = 0, limit: int = 100, stream_id: str | None = None
    ) -> list[RecordedEvent]:
        query = sa.select(events).where(events.c.position > after_position)
        if stream_id is not None:
            query = query.where(events.c.stream_id == stream_id)
        return await self._select(query.order_by(events.c.position).limit(limit))

    async def _read_batch(self, after_position: int, limit: int) -> list[RecordedEvent]:
        batch = await self.read_all(after_position, limit)
        if batch and batch[-1].commit_position > batch[-1].position:
            last = batch[-1]
            batch += await self._select(
                sa.select(events)
                .where(events.c.position > last.position,
                       events.c.position <= last.commit_position)
                .order_by(events.c.position)
            )
        return batch

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
            return (await self._find_commands(conn, [key])).get(key)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        async with self._sql() as conn:
            return await _snapshot(conn, stream_id)

    async def load_stream(self, stream_id: str) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """Both reads on one pooled connection: one checkout (and its ping), not two."""
        async with self._sql() as conn:
            snapshot = await _snapshot(conn, stream_id)
            after = snapshot.version if snapshot else 0
            rows = (await conn.execute(self._with_keys(_stream(stream_id, after)))).all()
        return snapshot, [self._recorded(row) for row in rows]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        values = {"version": snapshot.version, "state": snapshot.state,
                  "schema_version": snapshot.schema_version}
        try:
            async with self._sql(begin=True) as conn:
                updated = await conn.execute(
                    snapshots.update()
                    .where(snapshots.c.stream_id == snapshot.stream_id,
                           (snapshots.c.version < snapshot.version)
                           | (snapshots.c.schema_version != snapshot.schema_version))
                    .values(**values)
                )
                if updated.rowcount == 0:
                    exists = await conn.execute(
                        sa.select(snapshots.c.version)
                        .where(snapshots.c.stream_id == snapshot.stream_id)
                    )
                    if exists.first() is None:
                        await conn.execute(snapshots.insert().values(
                            stream_id=snapshot.stream_id, **values))
        except sa.exc.IntegrityError:
            pass  # another process saved a snapshot of the same stream at the same moment

    async def prune_commands(self, recorded_before: dt.datetime) -> int:
        before = recorded_before.astimezone(dt.UTC)  # SQLite stores UTC times without a zone
        old = (sa.select(commands.c.key).where(commands.c.recorded_at < before)
               .limit(PRUNE_ROWS).scalar_subquery())
        pruned = 0
        while True:  # a transaction per slice, as in sqlite.py
            async with self._sql(begin=True) as conn:
                count = (await conn.execute(commands.delete().where(commands.c.key.in_(old))))
            pruned += count.rowcount
            if count.rowcount < PRUNE_ROWS:
                return pruned
