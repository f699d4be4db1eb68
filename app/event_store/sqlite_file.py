"""The SQLite hot paths on the standard `sqlite3` module, one thread hop per operation.

Through SQLAlchemy + aiosqlite every statement costs several hops between the event loop and the
driver's thread, plus SQLAlchemy's per-row type processing; an append took ~6 ms and reading a
projection batch spent most of its time converting rows. Here a whole append group (BEGIN
IMMEDIATE … COMMIT) is one call on a dedicated writer thread and a read is one call on a reader
thread, each thread with its own connection to the same file.

The `sqlite3` module lets go of the GIL around every step of a statement (each row fetched or
written) and must take it back afterwards; while the event loop's thread is busy that takes up to
the interpreter's switch interval (5 ms) each time. So the writer reads and writes each table in
one statement of one step (multi-row VALUES, one JSON row for the versions it looks up), and
events are read as one JSON row too: a group commit or a read takes a handful of hand-overs
instead of one per row. Rows are stored exactly as
SQLAlchemy stores them (JSON text, `YYYY-MM-DD HH:MM:SS.ffffff` UTC times), so both paths read
each other's rows. The schema itself is still created by SQLAlchemy (app/event_store/tables.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any, TypeVar

import orjson

T = TypeVar("T")
EVENT_COLUMNS = ("position, stream_id, version, type, schema_version, data, metadata, "
                 "recorded_at, commit_position")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DATETIME storage format
ROWS_PER_STATEMENT = 256  # multi-row VALUES: 256 × 9 columns stays far below SQLite's 32 766
STATEMENTS = 2 * ROWS_PER_STATEMENT + 64  # prepared statements kept: every multi-row shape


class SqliteFile:
    """A writer thread and a reader thread, each with its own connection to one database file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="event-store-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="event-store-read")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False, cached_statements=STATEMENTS)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: work(self.connection()))

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` inside BEGIN IMMEDIATE … COMMIT (ROLLBACK if it raises), on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._transaction, work)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def insert_rows(
    conn: sqlite3.Connection, insert: str, rows: list[tuple[object, ...]], tail: str = ""
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


def file_of(database: str | None) -> str | None:
    """The file of an SQLite URL's database, or None for an in-memory database."""
    if not database or database == ":memory:" or "mode=memory" in database:
        return None
    return database


def select_events(where: str, order: str = "position", limit: bool = False) -> str:
    """The events matching `where`, as one row holding one JSON array (see `fetch_events`)."""
    rows = (f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY {order}"
            + (" LIMIT ?" if limit else ""))
    return (
        "SELECT json_group_array(json_array(position, stream_id, version, type, schema_version,"
        f" json(data), json(metadata), recorded_at, commit_position)) FROM ({rows})"
    )


def fetch_events(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[Any]:
    """The rows of a `select_events` query in EVENT_COLUMNS order, data and metadata decoded,
    in position order: one step (one GIL hand-over) for the whole answer, not one per row."""
    (text,) = conn.execute(sql, params).fetchone()
    rows: list[Any] = orjson.loads(text)
    rows.sort(key=itemgetter(0))  # the order an aggregate sees its rows in is SQLite's choice
    return rows
