"""Where the SQLite store's calls run: a reader thread, and one write connection shared by a
writer thread and the event loop (app/event_store/sqlite.py holds the store's SQL).

The `sqlite3` module lets go of the GIL around every step of a statement (each row fetched or
written) and must take it back afterwards; while the event loop's thread is busy that takes up to
the interpreter's switch interval (5 ms) each time. So each table is read and written in one
statement of one step (multi-row VALUES, one JSON row for the versions looked up, events read as
one JSON row). Even so, a group commit run whole on a thread of its own took about 4.5 ms under
load for 0.7 ms of work, nearly all of it waiting for the GIL between its statements, and the
commands behind it waited as long. So a group's statements run on the event loop itself
(`append`): they only change pages in memory, about 50 µs per command, with no hand-over at all.
What may wait runs on the writer thread: the COMMIT with its fsync, and taking the write lock when
another process holds it (it is first tried without waiting). Other writes (snapshots, pruning,
VACUUM) run whole on the writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from app.event_store.base import StoreUnavailable
from app.event_store.group_commit import ForeignWrite
from app.event_store.worker_thread import WorkerThread

T = TypeVar("T")
UNAVAILABLE = (sqlite3.OperationalError, OSError)
BUSY_MS = 30_000  # how long a statement waits for another process's lock


class SqliteThreads:
    """A writer thread and a reader thread over one database file: the reader's connection is
    used on its thread only; the write connection on the writer thread and (`append`) on the
    event loop, one transaction at a time."""

    def __init__(self, path: str, cached_statements: int) -> None:
        self.path = path
        self._cached_statements = cached_statements
        self._writer = WorkerThread("event-store-write")
        self._reader = WorkerThread("event-store-read")
        self._reads: sqlite3.Connection | None = None
        self._writes: sqlite3.Connection | None = None
        self._writing = asyncio.Lock()
        """Held by every use of the write connection: one transaction at a time, whichever
        thread runs its statements."""

    def _read_connection(self) -> sqlite3.Connection:
        """The reader thread's connection (made there, on its first read)."""
        if self._reads is None:
            self._reads = _connect(self.path, self._cached_statements)
        return self._reads

    def _write_connection(self) -> sqlite3.Connection:
        """The one connection that writes, used by the writer thread and (`append`) the loop."""
        if self._writes is None:
            self._writes = _connect(self.path, self._cached_statements)
        return self._writes

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the reader thread; a lost file raises StoreUnavailable."""
        try:
            return await self._reader.call(lambda: work(self._read_connection()))
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` inside BEGIN IMMEDIATE … COMMIT (ROLLBACK if it raises), on the writer thread."""
        async with self._writing, _errors():
            conn = self._write_connection()
            return await self._writer.call(lambda: _transaction(conn, work))

    async def append(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` inside BEGIN IMMEDIATE … COMMIT (ROLLBACK if it raises), its statements run
        here on the event loop, what may wait on the writer thread (see the module's docstring):
        the COMMIT with its fsync, and the write lock when another process holds it."""
        async with self._writing, _errors():
            conn = self._write_connection()
            try:
                if not _begun_at_once(conn):
                    await self._on_writer(lambda: conn.execute("BEGIN IMMEDIATE"))
                result = work(conn)
                await self._on_writer(lambda: _commit(conn))
            finally:
                if conn.in_transaction:  # `work` raised, or the COMMIT failed or never ran
                    conn.execute("ROLLBACK")
            return result

    async def _on_writer(self, call: Callable[[], object]) -> None:
        """`call` on the writer thread, finished (or failed) there before this returns, even
        when the caller is cancelled meanwhile: the connection is not touched while it runs."""
        running = self._writer.submit(call)  # a bare future: a closing loop cancels only tasks
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait([running])
            if not running.cancelled():
                running.exception()  # retrieved: the cancellation is what the caller sees
            raise

    async def checkpoint(self) -> None:
        """`PRAGMA wal_checkpoint(TRUNCATE)` on the writer thread (it waits for readers)."""
        await self.run("PRAGMA wal_checkpoint(TRUNCATE)")

    async def run(self, statement: str) -> None:
        """One statement outside any transaction, on the writer thread."""
        async with self._writing, _errors():
            conn = self._write_connection()
            await self._writer.call(lambda: conn.execute(statement).fetchall())

    def close(self) -> None:
        self._writer.shutdown()
        self._reader.shutdown()
        for conn in (self._reads, self._writes):
            if conn is not None:
                conn.close()
        self._reads = self._writes = None


def _connect(path: str, cached_statements: int) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False,
                           cached_statements=cached_statements)
    conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=ON")  # an erased key's bytes are overwritten
    return conn


@contextlib.asynccontextmanager
async def _errors() -> AsyncIterator[None]:
    """A constraint the store's own plan did not foresee is another process's write; a file
    that cannot be used is an outage."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise ForeignWrite(str(exc)) from exc
    except UNAVAILABLE as exc:
        raise StoreUnavailable(str(exc)) from exc


def _transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _commit(conn)
    return result


def _commit(conn: sqlite3.Connection) -> None:
    """COMMIT; one that fails leaves no transaction open behind it."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _begun_at_once(conn: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE without waiting: False when another process holds the write lock (then
    it is waited for on the writer thread, not here on the event loop)."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    return True
