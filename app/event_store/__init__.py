"""The event store: the port (base.py), its adapters, `open_store`, which picks one, and
`migrate`, which brings a database's schema to the newest revision (migrations/)."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import make_url

from app.domain.schema import EventSchema
from app.event_store.base import EventStore
from app.event_store.memory import MemoryEventStore
from app.event_store.migrations import (
    Revisions,
    head,
    upgrade_engine,
    upgrade_file,
    verify_engine,
)
from app.event_store.sqlalchemy import SqlAlchemyEventStore
from app.event_store.sqlalchemy_engine import create_engine
from app.event_store.sqlite import SqliteEventStore, file_of


async def open_store(url: str, schema: EventSchema, direct: bool = True) -> EventStore:
    """The adapter for `url`. SQLite is migrated to the newest schema on the way; PostgreSQL
    must be there already (`migrate`), or SchemaOutOfDate is raised.

    `memory://NAME`: in memory (a test double); an SQLite file with `direct`: sqlite3 threads of
    the store's own (app/event_store/sqlite.py); anything else (PostgreSQL, SQLite without
    `direct` or in memory): SQLAlchemy async.
    """
    if url.startswith("memory://"):
        return await MemoryEventStore.open(url.removeprefix("memory://"), schema)
    if url.startswith("sqlite") and direct:
        path = file_of(make_url(url).database)
        if path is not None:
            return await SqliteEventStore.open(path, schema)
    return await SqlAlchemyEventStore.open(url, schema)


async def migrate(url: str) -> Revisions:
    """Upgrade the database of `url` to the newest revision (`python -m app migrate`); the
    revision it was at and the one it is at now (`memory://` is always at the newest)."""
    if url.startswith("memory://"):
        return head(), head()
    if url.startswith("sqlite"):
        path = file_of(make_url(url).database)
        if path is not None:
            return await asyncio.to_thread(upgrade_file, path)
    engine = create_engine(url)
    try:
        return await upgrade_engine(engine)
    finally:
        await engine.dispose()


async def verify_schema(url: str) -> None:
    """Raise SchemaOutOfDate unless a database that does not migrate itself (anything but
    SQLite and memory) is at the newest revision."""
    if url.startswith(("memory://", "sqlite")):
        return
    engine = create_engine(url)
    try:
        await verify_engine(engine)
    finally:
        await engine.dispose()
