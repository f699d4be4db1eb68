"""The event-store contract, run against every implementation (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from app.domain.schema import default_schema
from app.event_store.base import (
    ConcurrencyError,
    DuplicateCommand,
    IdempotencyRecord,
    NewEvent,
    Snapshot,
)
from app.event_store.sqlalchemy import SqlEventStore
from app.event_store.tables import events as events_table


def tick(stream: str, n: int = 0) -> NewEvent:
    return NewEvent(stream, "Tick", {"n": n})


async def test_appended_events_read_back_in_order(store: SqlEventStore) -> None:
    first = await store.append([tick("a-1", 1), tick("a-1", 2)], {"a-1": 0}, {"actor": "x"})
    second = await store.append([tick("b-1", 3)], {"b-1": 0})
    assert (first.first_position, first.last_position, second.last_position) == (1, 2, 3)
    log = await store.read_all()
    assert [(e.position, e.stream_id, e.version, e.data["n"]) for e in log] == [
        (1, "a-1", 1, 1), (2, "a-1", 2, 2), (3, "b-1", 1, 3),
    ]
    assert [e.commit_position for e in log] == [2, 2, 3]
    assert log[0].metadata == {"actor": "x"}
    assert [e.version for e in await store.read_stream("a-1", after_version=1)] == [2]
    assert [e.position for e in await store.read_all(1, 1)] == [2]
    assert [e.position for e in await store.read_all(stream_id="b-1")] == [3]
    assert await store.head_position() == 3
    assert await store.stream_versions(["a-1", "b-1", "c-1"]) == {"a-1": 2, "b-1": 1}
    assert await store.max_stream_number("a") == 1


async def test_a_stale_expected_version_writes_nothing(store: SqlEventStore) -> None:
    await store.append([tick("a-1")], {"a-1": 0})
    with pytest.raises(ConcurrencyError) as raised:
        await store.append([tick("a-1")], {"a-1": 0})
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == ("a-1", 0, 1)
    assert await store.head_position() == 1


async def test_a_multi_stream_append_is_all_or_nothing(store: SqlEventStore) -> None:
    await store.append([tick("location-1")], {"location-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append(
            [tick("employee-1"), tick("location-1")], {"employee-1": 0, "location-1": 0}
        )
    assert await store.read_stream("employee-1") == []
    assert await store.head_position() == 1


async def test_streams_only_read_are_checked_too(store: SqlEventStore) -> None:
    await store.append([tick("location-1")], {"location-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append([tick("employee-1")], {"employee-1": 0, "location-1": 2})
    result = await store.append([tick("employee-1")], {"employee-1": 0, "location-1": 1})
    assert result.last_position == 2
    assert await store.stream_versions(["location-1"]) == {"location-1": 1}


async def test_an_append_must_state_every_stream_it_writes(store: SqlEventStore) -> None:
    with pytest.raises(ValueError, match="expected versions"):
        await store.append([tick("a-1")], {})


async def test_recorded_at_never_decreases_along_position(store: SqlEventStore) -> None:
    for n in range(30):
        await store.append([tick(f"s-{n % 3}", n)], {f"s-{n % 3}": n // 3})
    times = [e.recorded_at for e in await store.read_all(limit=100)]
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset() == dt.timedelta(0) for t in times)


async def test_an_idempotency_key_is_honoured_once(store: SqlEventStore) -> None:
    record = IdempotencyRecord("key-1", "Cmd", "f" * 64, {"entity": "a", "id": 1})
    done = await store.append([tick("a-1")], {"a-1": 0}, idempotency=record)
    with pytest.raises(DuplicateCommand) as raised:
        await store.append([tick("b-1")], {"b-1": 0}, idempotency=record)
    assert raised.value.record.commit_position == done.last_position
    assert raised.value.record.result == {"entity": "a", "id": 1}
    assert await store.head_position() == 1
    found = await store.find_command("key-1")
    assert found is not None and found.fingerprint == "f" * 64
    assert await store.find_command("key-2") is None


async def test_old_schema_versions_are_upcast_on_read(store: SqlEventStore) -> None:
    """A v1 LocationCreated, as an older release stored it, reads back in the current shape."""
    old = {"location_id": 1, "street_address": "1 Main", "city": "X", "state": "Y",
           "zip_code": "62701"}
    async with store._engine.begin() as conn:
        await conn.execute(
            events_table.insert().values(
                position=1, stream_id="location-1", version=1, type="LocationCreated",
                schema_version=1, data=old, metadata={}, commit_position=1,
                recorded_at=dt.datetime.now(dt.UTC),
            )
        )
    (event,) = await store.read_all()
    assert event.schema_version == 2
    assert event.data["postal_code"] == "62701" and "zip_code" not in event.data
    assert (await store.read_stream("location-1"))[0].data == event.data


async def test_a_batch_never_splits_an_append(store: SqlEventStore) -> None:
    await store.append([tick("a-1"), tick("a-1"), tick("a-1")], {"a-1": 0})
    await store.append([tick("b-1")], {"b-1": 0})
    assert [e.position for e in await store.read_batch(0, 1)] == [1, 2, 3]
    assert [e.position for e in await store.read_batch(3, 1)] == [4]
    assert await store.read_batch(4, 10) == []


async def test_the_newest_snapshot_wins(store: SqlEventStore) -> None:
    assert await store.load_snapshot("a-1") is None
    await store.save_snapshot(Snapshot("a-1", 200, {"v": 200}))
    await store.save_snapshot(Snapshot("a-1", 100, {"v": 100}))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 200, {"v": 200})
    await store.save_snapshot(Snapshot("a-1", 300, {"v": 300}))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 300, {"v": 300})


async def test_listeners_hear_each_committed_append(store: SqlEventStore) -> None:
    heard: list[int] = []
    store.on_append(heard.append)
    await store.append([tick("a-1"), tick("a-1")], {"a-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append([tick("a-1")], {"a-1": 0})
    assert heard == [2]


async def test_racing_writers_lose_no_update(store_url: str) -> None:
    """20 writers, each with its own connection pool, race to bump the same two streams."""
    stores = [await SqlEventStore.open(store_url, default_schema()) for _ in range(20)]
    conflicts = 0

    async def bump(writer: SqlEventStore, times: int) -> None:
        nonlocal conflicts
        done = 0
        while done < times:
            versions = await writer.stream_versions(["hot-1", "hot-2"])
            expected = {"hot-1": versions.get("hot-1", 0), "hot-2": versions.get("hot-2", 0)}
            try:
                await writer.append([tick("hot-1"), tick("hot-2")], expected)
                done += 1
            except ConcurrencyError:
                conflicts += 1

    try:
        await asyncio.gather(*(bump(s, 3) for s in stores))
        versions = await stores[0].stream_versions(["hot-1", "hot-2"])
        log = await stores[0].read_all(limit=1000)
    finally:
        for s in stores:
            await s.close()
    assert versions == {"hot-1": 60, "hot-2": 60}
    assert [e.position for e in log] == list(range(1, 121))
    assert sorted(e.version for e in log if e.stream_id == "hot-1") == list(range(1, 61))
    assert conflicts > 0, "the writers never actually raced"


async def test_a_tailing_reader_never_misses_an_event(store_url: str) -> None:
    """8 writers append while a reader tails by position: it sees every event once, in order."""
    writers = [await SqlEventStore.open(store_url, default_schema()) for _ in range(8)]
    reader = await SqlEventStore.open(store_url, default_schema())
    per_writer = 40
    finished = asyncio.Event()
    seen: list[int] = []

    async def write(writer: SqlEventStore, w: int) -> None:
        for n in range(per_writer):
            size = 1 + n % 3
            await writer.append([tick(f"w{w}-{n}", i) for i in range(size)], {f"w{w}-{n}": 0})

    async def tail() -> None:
        last = 0
        while True:
            done = finished.is_set()
            batch = await reader.read_all(last, 7)
            seen.extend(e.position for e in batch)
            last = batch[-1].position if batch else last
            if done and not batch:
                return
            if not batch:
                await asyncio.sleep(0)

    try:
        tailing = asyncio.create_task(tail())
        await asyncio.gather(*(write(w, i) for i, w in enumerate(writers)))
        finished.set()
        await tailing
        head = await reader.head_position()
    finally:
        for s in [*writers, reader]:
            await s.close()
    assert head == 8 * sum(1 + n % 3 for n in range(per_writer))
    assert seen == list(range(1, head + 1))
