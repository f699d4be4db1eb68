"""The SQLite store's group commits run their statements on the event loop and wait on the
writer thread only (app/event_store/sqlite_threads.py): for the COMMIT, and for the write lock when
another process holds it. Such a wait holds up nothing else, and one given up leaves nothing
behind."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.domain.schema import default_schema
from app.event_store.base import NewEvent
from app.event_store.sqlite import SqliteEventStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    store = await SqliteEventStore.open(str(tmp_path / "events.db"), default_schema())
    yield store
    await store.close()


def other_process_writing(store: SqliteEventStore) -> sqlite3.Connection:
    """A connection of its own holding the file's write lock, as another process would."""
    other = sqlite3.connect(store._file.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def tick(stream: str, n: int) -> NewEvent:
    return NewEvent(stream, "Tick", {"n": n})


async def test_an_append_waits_for_another_writer_without_holding_up_the_loop(
    store: SqliteEventStore,
) -> None:
    await store.append([tick("a-1", 1)], {"a-1": 0})
    other = other_process_writing(store)
    appending = asyncio.create_task(store.append([tick("a-1", 2)], {"a-1": 1}))
    # The loop goes on meanwhile: reads are answered (were it stuck in the lock's wait, the
    # lock, released only below, would never be, and the append would fail after 30 s).
    for _ in range(5):
        await asyncio.sleep(0.05)
        assert await store.head_position() == 1
    assert not appending.done()
    other.rollback()
    other.close()
    result = await appending
    assert result.last_position == 2
    assert [e.data["n"] for e in await store.read_all()] == [1, 2]


async def test_a_caller_that_stops_waiting_does_not_undo_its_append(
    store: SqliteEventStore,
) -> None:
    """The group commit writes on whether or not its callers still listen: the append lands,
    once, when the lock is free."""
    other = other_process_writing(store)
    appending = asyncio.create_task(store.append([tick("b-1", 1)], {"b-1": 0}))
    await asyncio.sleep(0.1)
    appending.cancel()
    other.rollback()
    other.close()
    with pytest.raises(asyncio.CancelledError):
        await appending
    await store.append([tick("b-1", 2)], {"b-1": 1})
    assert [(e.version, e.data["n"]) for e in await store.read_all()] == [(1, 1), (2, 2)]


def test_a_loop_closing_while_a_group_waits_for_the_lock_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    """The loop ends (its tasks cancelled) while a group waits on the writer thread for
    another process's lock: the wait is finished there, the group rolled back, and the file
    is free for the next writer."""
    path = str(tmp_path / "events.db")
    opened, waiting = threading.Event(), threading.Event()
    locked = threading.Event()
    kept: list[SqliteEventStore] = []  # the process lives on: its connections stay open

    async def append_and_leave() -> None:
        store = await SqliteEventStore.open(path, default_schema())
        kept.append(store)
        opened.set()
        await asyncio.to_thread(locked.wait, 30)
        pending = asyncio.ensure_future(store.append([tick("d-1", 1)], {"d-1": 0}))
        await asyncio.sleep(0.2)
        assert not pending.done()
        waiting.set()  # returning ends the loop: asyncio.run cancels the pending append

    closing = threading.Thread(target=asyncio.run, args=(append_and_leave(),))
    closing.start()
    assert opened.wait(30)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    locked.set()
    assert waiting.wait(30)
    other.rollback()  # the writer thread's BEGIN gets the lock, then the group is rolled back
    other.close()
    closing.join(30)
    assert not closing.is_alive()
    # A BEGIN left behind on the writer thread would take the lock within a moment and keep
    # it: give it that moment, then the next writer must still get the lock.
    time.sleep(0.5)

    async def next_writer() -> list[int]:
        store = await SqliteEventStore.open(path, default_schema())
        try:
            await store.append([tick("d-1", 2)], {"d-1": 0})
            return [e.data["n"] for e in await store.read_all()]
        finally:
            await store.close()

    assert asyncio.run(next_writer()) == [2]


async def test_a_group_that_fails_midway_leaves_no_transaction_open(
    store: SqliteEventStore,
) -> None:
    """A row of another writer's making (here: an event already at the next position) fails
    the group's insert on the loop; it is rolled back there and the store writes on."""
    other = sqlite3.connect(store._file.path, isolation_level=None)
    other.execute(
        "INSERT INTO events (position, stream_id, version, type, schema_version, data, metadata,"
        " recorded_at, commit_position) VALUES (1, 'z-1', 1, 'Tick', 1, '{}', '{}',"
        " '2026-01-01 00:00:00.000000', 1)"
    )
    other.close()
    store_head = await store.head_position()
    assert store_head == 1  # read from the file: the store's own memory did not know it
    result = await store.append([tick("c-1", 1)], {"c-1": 0})
    assert result.last_position == 2
    assert [e.stream_id for e in await store.read_all()] == ["z-1", "c-1"]
