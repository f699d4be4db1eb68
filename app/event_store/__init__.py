"""The event store: the port (base.py), its adapters, and `open_store`, which picks one."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from app.domain.schema import EventSchema
from app.event_store.base import EventStore
from app.event_store.memory import MemoryEventStore
from app.event_store.sqlalchemy import SqlAlchemyEventStore
from app.event_store.sqlite import SqliteEventStore, file_of


async def open_store(url: str, schema: EventSchema, direct: bool = True) -> EventStore:
    """The adapter for `url`, its tables created if missing.

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
