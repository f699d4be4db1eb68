"""How the SQLAlchemy event store reaches its database: the engine configured per dialect
(SQLite: WAL, durable commits, explicit BEGIN), the schema made sure of at open, and which
errors mean the database went away (a retry later may succeed) or another writer's row is in the
way. The store's SQL is app/event_store/sqlalchemy.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.event_store.migrations import upgrade_engine, upgrade_file, verify_engine
from app.event_store.sqlite import file_of

UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, sqlite3.OperationalError)
LOST_SQLSTATES = ("08", "57P")  # connection exception; operator intervention (server shutting down)
try:
    from asyncpg import exceptions as _pg  # type: ignore[import-untyped]

    PG_LOST: tuple[type[BaseException], ...] = (
        _pg.PostgresConnectionError, _pg.OperatorInterventionError, _pg.InternalClientError,
        _pg.InterfaceError,
    )
    PG_UNIQUE: tuple[type[BaseException], ...] = (_pg.IntegrityConstraintViolationError,)
except ImportError:  # SQLite only
    PG_LOST = PG_UNIQUE = ()
FOREIGN: tuple[type[BaseException], ...] = (sa.exc.IntegrityError, *PG_UNIQUE)


def lost_connection(exc: BaseException) -> bool:
    """Whether `exc` means the database went away (a retry later may succeed), not a bad query.

    Besides the DBAPI's OperationalError/InterfaceError, asyncpg reports a server shutting down
    or a connection broken mid-operation as plain DBAPIErrors; its SQLSTATE or cause tells
    (raised by asyncpg itself, on the append path: its own class or SQLSTATE)."""
    if isinstance(exc, UNAVAILABLE + PG_LOST):
        return True
    if PG_LOST and str(getattr(exc, "sqlstate", None) or "").startswith(LOST_SQLSTATES):
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


def create_engine(url: str) -> AsyncEngine:
    """An engine configured for the event store's dialect (SQLite: WAL and explicit BEGIN)."""
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True, pool_size=10)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @sa_event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # our own BEGIN: appends lock up front
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # concurrent readers
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA secure_delete=ON")  # an erased key's bytes are overwritten
        cursor.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: SyncConnection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # no transaction (VACUUM: `compact`)
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


async def prepare_schema(url: str, engine: AsyncEngine) -> None:
    """SQLite migrates itself to the newest schema (a file first on a connection of its own:
    see `upgrade_file`); PostgreSQL must be at it already (`python -m app migrate`), or
    SchemaOutOfDate says so."""
    if engine.dialect.name != "sqlite":
        await verify_engine(engine)
        return
    path = file_of(make_url(url).database)
    if path is None:
        await upgrade_engine(engine)
    else:
        await asyncio.to_thread(upgrade_file, path)
