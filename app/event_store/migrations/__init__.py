"""The event store's schema, versioned: Alembic revisions (versions/) of every table in
app/event_store/tables.py, run by `python -m app migrate` and by the SQLite adapters at start.

Every upgrade runs in one transaction that first takes the migration lock (SQLite: BEGIN
IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so processes starting together on a
new database migrate it once and the others find it done. A new revision is a file in versions/
whose `down_revision` is the current head; the tables' Table objects change with it (a test
compares the two, so they cannot drift).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
MIGRATE = "python -m app migrate"
LOCK_KEY = 0x4D_49_47_52_41_54_45  # the PostgreSQL advisory lock that serialises migrations
WAL_SWITCH_SECONDS = 30.0
Revisions = tuple[str | None, str]
"""(the revision a database was at, the one it is at now)."""


class SchemaError(Exception):
    """The database's schema cannot be used or upgraded as it is; the message says why."""


class SchemaOutOfDate(SchemaError):
    """The database's schema is not the one this version of the service uses."""


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision: the schema this version of the service uses."""
    newest = _script().get_current_head()
    assert newest is not None, "versions/ holds no revision"
    return newest


def current(conn: sa.Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def _known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _newer(found: str) -> SchemaOutOfDate:
    return SchemaOutOfDate(
        f"the database schema is at revision {found}, unknown to this version of the service "
        f"(which knows up to {head()}): it was migrated by a newer version")


def upgrade(conn: sa.Connection) -> Revisions:
    """Bring the schema to head inside `conn`'s transaction, which holds the migration lock."""
    before = current(conn)
    if before is not None and not _known(before):
        raise _newer(before)
    if before != head():
        command.upgrade(_config(conn), "head")
        log.info("event store schema upgraded from %s to revision %s",
                 f"revision {before}" if before else "no revision", head())
    return before, head()


def verify(conn: sa.Connection) -> None:
    """Raise SchemaOutOfDate, saying what to do, unless the database is at head."""
    found = current(conn)
    if found == head():
        return
    if found is None:
        made = "has tables made before migrations existed" if sa.inspect(conn).has_table(
            "events") else "has no event store schema yet"
        raise SchemaOutOfDate(
            f"the database {made}: run `{MIGRATE}` with the same DATABASE_URL first")
    if not _known(found):
        raise _newer(found)
    raise SchemaOutOfDate(
        f"the database schema is at revision {found}, this version of the service needs "
        f"{head()}: run `{MIGRATE}` with the same DATABASE_URL first")


async def upgrade_engine(engine: AsyncEngine) -> Revisions:
    """`upgrade` through an async engine (PostgreSQL; SQLite in memory), under the lock."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(sqlite_immediate=True)  # see sqlalchemy.py
        async with conn.begin():
            if engine.dialect.name == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
            return await conn.run_sync(upgrade)


async def verify_engine(engine: AsyncEngine) -> None:
    """`verify` through an async engine."""
    async with engine.connect() as conn:
        await conn.run_sync(verify)


def upgrade_file(path: str) -> Revisions:
    """`upgrade` of an SQLite file (created if missing), then WAL mode, so readers never wait
    for the writer. Blocking: run it in a thread."""
    # The driver's own transactions off, so that ours takes the write lock before it looks:
    # processes starting together on a new file (`serve --workers N`) would each see no tables
    # and all but one fail on "table already exists".
    engine = sa.create_engine(
        f"sqlite:///{path}", connect_args={"timeout": 30, "isolation_level": None}
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                revisions = upgrade(conn)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
            _switch_to_wal(conn)
            return revisions
    finally:
        engine.dispose()


def _switch_to_wal(conn: sa.Connection) -> None:
    """Switching to WAL needs the file to itself and, unlike other statements, does not wait
    for it: a process starting beside another is told "locked" and tries again."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            return
        except sa.exc.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
