"""Processes that open a new SQLite event store together (`serve --workers N` on a fresh
directory) all start: the tables are checked for and created under one write lock."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from app.domain.schema import default_schema
from app.event_store.sqlite import SqliteEventStore

PROCESSES = 4
ROUNDS = 10


def open_and_close(path: str) -> None:
    async def run() -> None:
        store = await SqliteEventStore.open(path, default_schema())
        await store.close()

    asyncio.run(run())


def test_processes_opening_a_new_file_together_all_start(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"events-{round_}.db")
        processes = [context.Process(target=open_and_close, args=(path,))
                     for _ in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [p.exitcode for p in processes] == [0] * PROCESSES, f"round {round_}"
