"""The event-store contract, run against every adapter: the direct SQLite one, SQLAlchemy on
SQLite and on PostgreSQL, and the in-memory one (a test double only because it passes this)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.domain.schema import default_schema
from app.event_store import open_store
from app.event_store.base import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    IdempotencyRecord,
    NewEvent,
    Snapshot,
    StoreUnavailable,
)
from app.event_store.tables import events as events_table
from tests.conftest import SQL_STORES, StoreOpener, url_of


@pytest.fixture(params=["memory", *SQL_STORES])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every adapter, the in-memory one too."""
    return await url_of(request.param, tmp_path)


def tick(stream: str, n: int = 0) -> NewEvent:
    return NewEvent(stream, "Tick", {"n": n})


async def test_appended_events_read_back_in_order(store: EventStore) -> None:
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


async def test_a_stale_expected_version_writes_nothing(store: EventStore) -> None:
    await store.append([tick("a-1")], {"a-1": 0})
    with pytest.raises(ConcurrencyError) as raised:
        await store.append([tick("a-1")], {"a-1": 0})
    assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == ("a-1", 0, 1)
    assert await store.head_position() == 1


async def test_a_multi_stream_append_is_all_or_nothing(store: EventStore) -> None:
    await store.append([tick("location-1")], {"location-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append(
            [tick("employee-1"), tick("location-1")], {"employee-1": 0, "location-1": 0}
        )
    assert await store.read_stream("employee-1") == []
    assert await store.head_position() == 1


async def test_streams_only_read_are_checked_too(store: EventStore) -> None:
    await store.append([tick("location-1")], {"location-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append([tick("employee-1")], {"employee-1": 0, "location-1": 2})
    result = await store.append([tick("employee-1")], {"employee-1": 0, "location-1": 1})
    assert result.last_position == 2
    assert await store.stream_versions(["location-1"]) == {"location-1": 1}


async def test_an_append_must_state_every_stream_it_writes(store: EventStore) -> None:
    with pytest.raises(ValueError, match="expected versions"):
        await store.append([tick("a-1")], {})


async def test_recorded_at_never_decreases_along_position(store: EventStore) -> None:
    for n in range(30):
        await store.append([tick(f"s-{n % 3}", n)], {f"s-{n % 3}": n // 3})
    times = [e.recorded_at for e in await store.read_all(limit=100)]
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset() == dt.timedelta(0) for t in times)


async def test_an_idempotency_key_is_honoured_once(store: EventStore) -> None:
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


async def test_old_schema_versions_are_upcast_on_read(store: EventStore) -> None:
    """A v1 LocationCreated, as an older release stored it, reads back in the current shape."""
    old = {"location_id": 1, "street_address": "1 Main", "city": "X", "state": "Y",
           "zip_code": "62701"}
    await store.append([NewEvent("location-1", "LocationCreated", old, schema_version=1)],
                       {"location-1": 0})
    for event in (*await store.read_all(), *await store.read_batch(0, 10)):
        assert event.schema_version == 2
        assert event.data["postal_code"] == "62701" and "zip_code" not in event.data
    assert (await store.read_stream("location-1"))[0].data == (await store.read_all())[0].data


async def test_an_append_whose_upcast_fails_still_returns_and_the_writer_goes_on(
    store: EventStore,
) -> None:
    """A v1 row its upcaster cannot read (a bug, or data a client shaped wrongly) is stored as
    sent; the append is answered and later appends commit (the writer does not die with it)."""
    broken = {"location_id": 1}  # v1 LocationCreated without its zip_code
    async with asyncio.timeout(10):
        done = await store.append(
            [NewEvent("location-1", "LocationCreated", broken, schema_version=1)],
            {"location-1": 0},
        )
        after = await store.append([tick("a-1")], {"a-1": 0})
    assert (done.last_position, after.last_position) == (1, 2)
    assert await store.head_position() == 2


async def test_a_batch_never_splits_an_append(store: EventStore) -> None:
    await store.append([tick("a-1"), tick("a-1"), tick("a-1")], {"a-1": 0})
    await store.append([tick("b-1")], {"b-1": 0})
    assert [e.position for e in await store.read_batch(0, 1)] == [1, 2, 3]
    assert [e.position for e in await store.read_batch(3, 1)] == [4]
    assert await store.read_batch(4, 10) == []


async def test_the_newest_snapshot_wins(store: EventStore) -> None:
    assert await store.load_snapshot("a-1") is None
    await store.save_snapshot(Snapshot("a-1", 200, {"v": 200}))
    await store.save_snapshot(Snapshot("a-1", 100, {"v": 100}))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 200, {"v": 200})
    await store.save_snapshot(Snapshot("a-1", 300, {"v": 300}))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 300, {"v": 300})


async def test_a_stream_loads_as_its_snapshot_and_the_events_after_it(store: EventStore) -> None:
    assert await store.load_stream("a-1") == (None, [])
    await store.append([tick("a-1", n) for n in range(1, 4)], {"a-1": 0})
    await store.append([tick("b-1")], {"b-1": 0})
    snapshot, after = await store.load_stream("a-1")
    assert snapshot is None and [e.data["n"] for e in after] == [1, 2, 3]
    assert after == await store.read_stream("a-1")
    await store.save_snapshot(Snapshot("a-1", 2, {"n": 2}))
    await store.append([tick("a-1", 4)], {"a-1": 3})
    snapshot, after = await store.load_stream("a-1")
    assert snapshot == Snapshot("a-1", 2, {"n": 2})
    assert [(e.version, e.data["n"]) for e in after] == [(3, 3), (4, 4)]


async def test_a_snapshot_of_another_shape_always_replaces_the_stored_one(
    store: EventStore
) -> None:
    """Whatever its stream version: the stored one cannot be loaded by the writer's code."""
    await store.save_snapshot(Snapshot("a-1", 300, {"old": 300}, schema_version=1))
    await store.save_snapshot(Snapshot("a-1", 200, {"new": 200}, schema_version=2))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 200, {"new": 200}, 2)
    await store.save_snapshot(Snapshot("a-1", 100, {"new": 100}, schema_version=2))
    assert await store.load_snapshot("a-1") == Snapshot("a-1", 200, {"new": 200}, 2)


async def test_idempotency_records_older_than_the_cut_are_pruned(store: EventStore) -> None:
    old = await store.append([tick("a-1")], {"a-1": 0},
                             idempotency=IdempotencyRecord("old", "Tick", "f1"))
    await asyncio.sleep(0.01)  # a later time than `old`'s (times are microseconds)
    new = await store.append([tick("b-1")], {"b-1": 0},
                             idempotency=IdempotencyRecord("new", "Tick", "f2"))
    assert old.recorded_at < new.recorded_at

    assert await store.prune_commands(old.recorded_at) == 0  # strictly older only
    assert await store.prune_commands(new.recorded_at) == 1

    assert await store.find_command("old") is None
    kept = await store.find_command("new")
    assert kept is not None and kept.commit_position == 2
    # the pruned key is free again; the events it guarded stay
    await store.append([tick("a-1")], {"a-1": 1}, idempotency=IdempotencyRecord("old", "T", "f3"))
    assert [e.stream_id for e in await store.read_all()] == ["a-1", "b-1", "a-1"]
    assert await store.prune_commands(new.recorded_at + dt.timedelta(days=1)) == 2


async def test_listeners_hear_each_committed_append(store: EventStore) -> None:
    heard: list[int] = []
    store.on_append(heard.append)
    await store.append([tick("a-1"), tick("a-1")], {"a-1": 0})
    with pytest.raises(ConcurrencyError):
        await store.append([tick("a-1")], {"a-1": 0})
    assert heard == [2]


async def test_batches_of_its_own_commits_equal_what_the_database_holds(
    store: EventStore, open_same: StoreOpener
) -> None:
    """The appending store answers batches of its newest commits from memory: every answer
    must equal a fresh store's (which reads the database), whatever the batch bounds."""
    await store.append([tick("a-1", 1), tick("a-1", 2), tick("b-1", 3)], {"a-1": 0, "b-1": 0},
                       {"actor": "x"})
    for n in range(4, 9):
        await store.append([tick("c-1", n)], {"c-1": n - 4})
    fresh = await open_same()
    for after in range(0, 9):
        for limit in (1, 2, 3, 100):
            assert await store.read_batch(after, limit) == \
                await fresh.read_batch(after, limit), (after, limit)
    # another process appends: this store's memory has a gap, its reads still see all
    await fresh.append([tick("d-1", 9)], {"d-1": 0})
    await store.append([tick("e-1", 10)], {"e-1": 0})
    assert [e.position for e in await store.read_batch(7, 100)] == [8, 9, 10]
    assert [e.position for e in await store.read_batch(9, 100)] == [10]
    assert await store.read_batch(7, 100) == await fresh.read_batch(7, 100)


async def test_racing_writers_lose_no_update(open_same: StoreOpener) -> None:
    """20 writers, each with its own connection pool, race to bump the same two streams."""
    stores = [await open_same() for _ in range(20)]
    conflicts = 0

    async def bump(writer: EventStore, times: int) -> None:
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

    await asyncio.gather(*(bump(s, 3) for s in stores))
    versions = await stores[0].stream_versions(["hot-1", "hot-2"])
    log = await stores[0].read_all(limit=1000)
    assert versions == {"hot-1": 60, "hot-2": 60}
    assert [e.position for e in log] == list(range(1, 121))
    assert sorted(e.version for e in log if e.stream_id == "hot-1") == list(range(1, 61))
    assert conflicts > 0, "the writers never actually raced"


async def test_a_tailing_reader_never_misses_an_event(open_same: StoreOpener) -> None:
    """8 writers append while a reader tails by position: it sees every event once, in order."""
    writers = [await open_same() for _ in range(8)]
    reader = await open_same()
    per_writer = 40
    finished = asyncio.Event()
    seen: list[int] = []

    async def write(writer: EventStore, w: int) -> None:
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

    tailing = asyncio.create_task(tail())
    await asyncio.gather(*(write(w, i) for i, w in enumerate(writers)))
    finished.set()
    await tailing
    head = await reader.head_position()
    assert head == 8 * sum(1 + n % 3 for n in range(per_writer))
    assert seen == list(range(1, head + 1))


# Group commit: appends that wait while another is being written go into one transaction, each
# still checked on its own, in order, against the store as the earlier ones of the group left it.


async def test_a_group_commits_the_good_appends_and_refuses_only_the_stale_ones(
    store: EventStore,
) -> None:
    await store.append([tick("seen-1")], {"seen-1": 0})
    heard: list[int] = []
    store.on_append(heard.append)
    attempts = [
        store.append([tick("a-1"), tick("a-1")], {"a-1": 0}),
        store.append([tick("seen-1")], {"seen-1": 0}),  # stale: seen-1 is at 1
        store.append([tick("b-1")], {"b-1": 0}),
        store.append([tick("a-1")], {"a-1": 2}),  # sees the first append of its own group
        store.append([tick("c-1")], {"c-1": 0, "a-1": 2}),  # stale: a-1 is at 3 by now
        store.append([tick("d-1")], {"d-1": 0, "seen-1": 1}),
    ]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    stale = [o for o in outcomes if isinstance(o, BaseException)]
    assert [type(o) for o in stale] == [ConcurrencyError, ConcurrencyError]
    assert [(o.stream_id, o.expected, o.actual) for o in stale if isinstance(o, ConcurrencyError)] \
        == [("seen-1", 0, 1), ("a-1", 2, 3)]
    committed = [o for o in outcomes if not isinstance(o, BaseException)]
    assert [(o.first_position, o.last_position) for o in committed] == [
        (2, 3), (4, 4), (5, 5), (6, 6),
    ]
    log = await store.read_all(limit=100)
    assert [(e.position, e.stream_id, e.version, e.commit_position) for e in log] == [
        (1, "seen-1", 1, 1), (2, "a-1", 1, 3), (3, "a-1", 2, 3), (4, "b-1", 1, 4),
        (5, "a-1", 3, 5), (6, "d-1", 1, 6),
    ]
    assert len({e.recorded_at for e in log[1:]}) == 1, "the appends were not written as one group"
    assert heard == [3, 4, 5, 6]
    assert await store.stream_versions(["a-1", "b-1", "c-1", "d-1", "seen-1"]) == {
        "a-1": 3, "b-1": 1, "d-1": 1, "seen-1": 1,
    }


async def test_an_idempotency_key_used_twice_in_one_group_writes_once(store: EventStore) -> None:
    await store.append([tick("z-1")], {"z-1": 0})  # the group follows a head: positions move
    first = IdempotencyRecord("key-1", "Cmd", "f" * 64, {"entity": "a", "id": 1})
    outcomes = await asyncio.gather(
        store.append([tick("a-1")], {"a-1": 0}, idempotency=first),
        store.append([tick("b-1")], {"b-1": 0}, idempotency=first),
        store.append([tick("c-1")], {"c-1": 0}, idempotency=IdempotencyRecord("key-2", "C", "0")),
        return_exceptions=True,
    )
    done, duplicate, other = outcomes
    assert not isinstance(done, BaseException) and not isinstance(other, BaseException)
    assert isinstance(duplicate, DuplicateCommand)
    assert duplicate.record.commit_position == done.last_position == 2
    assert duplicate.record.result == {"entity": "a", "id": 1}
    assert other.last_position == 3
    assert [e.stream_id for e in await store.read_all()] == ["z-1", "a-1", "c-1"]
    found = await store.find_command("key-2")
    assert found is not None and found.commit_position == 3


@pytest.mark.parametrize("kind", SQL_STORES)
async def test_a_group_that_hits_a_foreign_row_still_commits_its_other_appends(
    kind: str, tmp_path: Path
) -> None:
    """A row written outside the protocol makes the group's transaction fail: the store then
    writes the group's appends one by one, so only the append that collides with it fails."""
    url = await url_of(kind, tmp_path)
    store = await open_store(url, default_schema(), direct=kind != "sqlite-aiosqlite")
    outside = create_async_engine(url)
    try:
        async with outside.begin() as conn:
            await conn.execute(
                events_table.insert().values(
                    position=1, stream_id="x-1", version=1, type="Tick", schema_version=1,
                    data={}, metadata={}, commit_position=1, recorded_at=dt.datetime.now(dt.UTC),
                )
            )
        outcomes = await asyncio.gather(
            store.append([tick("y-1")], {"y-1": 0}),
            store.append([tick("x-1")], {"x-1": 0}),  # the streams table does not know x-1
            store.append([tick("z-1")], {"z-1": 0}),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], ConcurrencyError)
        assert [o.last_position for o in outcomes if not isinstance(o, BaseException)] == [2, 3]
        assert [e.stream_id for e in await store.read_all()] == ["x-1", "y-1", "z-1"]
    finally:
        await store.close()
        await outside.dispose()


async def test_many_concurrent_appends_keep_positions_gapless_and_in_commit_order(
    store: EventStore,
) -> None:
    """300 concurrent single-stream appends (some stale) from one process: every caller gets
    its own positions, they tile the log without gaps, and time never goes backwards."""

    async def write(n: int) -> tuple[int, int] | None:
        stream = f"s-{n % 100}"
        try:
            result = await store.append([tick(stream, n)] * (1 + n % 2), {stream: 0})
        except ConcurrencyError:
            return None
        return result.first_position, result.last_position

    spans = [s for s in await asyncio.gather(*(write(n) for n in range(300))) if s is not None]
    assert len(spans) == 100  # exactly one append per stream found it at version 0
    covered = sorted(p for first, last in spans for p in range(first, last + 1))
    log = await store.read_all(limit=1000)
    assert covered == [e.position for e in log] == list(range(1, len(log) + 1))
    times = [e.recorded_at for e in log]
    assert times == sorted(times)


async def test_concurrent_appends_land_exactly_after_the_version_they_expected(
    store: EventStore,
) -> None:
    """100 streams, each sent appends expecting versions 0, 1 and 2 at once. However a store
    groups them (PostgreSQL writes two groups at a time), each append that commits sits right
    after the version it expected, each that fails names the version it found instead, and each
    stream holds exactly its committed appends."""
    wanted = [(f"s-{n}", expected) for expected in range(3) for n in range(100)]

    async def write(stream: str, expected: int) -> int | ConcurrencyError:
        try:
            return (await store.append([tick(stream, expected)], {stream: expected})).last_position
        except ConcurrencyError as refused:
            return refused

    outcomes = await asyncio.gather(*(write(s, v) for s, v in wanted))
    by_position = {e.position: e for e in await store.read_all(limit=1000)}
    committed: dict[str, int] = {}
    for (stream, expected), outcome in zip(wanted, outcomes, strict=True):
        if isinstance(outcome, ConcurrencyError):
            assert (outcome.stream_id, outcome.expected) == (stream, expected)
            assert outcome.actual != expected
            continue
        event = by_position[outcome]
        assert (event.stream_id, event.version, event.data["n"]) == (stream, expected + 1, expected)
        committed[stream] = committed.get(stream, 0) + 1
    assert await store.stream_versions(list(committed)) == committed
    assert sorted(by_position) == list(range(1, len(by_position) + 1))


@pytest.mark.postgres
async def test_postgres_writes_two_groups_at_once(tmp_path: Path) -> None:
    """100 appends waiting at once go as two groups of 50, each its own transaction on its own
    connection, so one group's commands run while the other is in the database
    (app/event_store/pg_append.py). Which of the two takes the lock first is the database's
    choice; each takes a run of positions whole."""
    url = await url_of("postgres", tmp_path)
    store = await open_store(url, default_schema())
    engine = create_async_engine(url)
    try:
        await asyncio.gather(*(store.append([tick(f"s-{n}")], {f"s-{n}": 0}) for n in range(100)))
        assert await writing_transactions(engine) == [list(range(1, 51)), list(range(51, 101))]
        await asyncio.gather(*(store.append([tick(f"t-{n}")], {f"t-{n}": 0})
                               for n in range(20)))  # too few to split
        assert (await writing_transactions(engine))[2:] == [list(range(101, 121))]
    finally:
        await store.close()
        await engine.dispose()


async def writing_transactions(engine: AsyncEngine) -> list[list[int]]:
    """The positions each PostgreSQL transaction wrote (by the rows' `xmin`), in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT position, xmin::text FROM events"))
        by_transaction: dict[str, list[int]] = {}
        for position, transaction in rows:
            by_transaction.setdefault(transaction, []).append(position)
    return sorted(sorted(positions) for positions in by_transaction.values())


@pytest.mark.postgres
async def test_postgres_writers_recover_when_their_connections_are_killed(tmp_path: Path) -> None:
    """The server drops every connection (a restart, a failover) 25 times, more than the pool
    holds: each time at most the group in flight fails, as StoreUnavailable, and the next
    append is written on a fresh connection; no connection is left checked out."""
    url = await url_of("postgres", tmp_path)
    store = await open_store(url, default_schema())
    killer = create_async_engine(url)
    try:
        for n in range(25):
            await asyncio.gather(*(store.append([tick(f"w{n}-{k}")], {f"w{n}-{k}": 0})
                                   for k in range(40)))  # both writers hold a connection
            async with killer.connect() as conn:
                await conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            try:
                await store.append([tick(f"x-{n}")], {f"x-{n}": 0})
            except StoreUnavailable:
                await store.append([tick(f"x-{n}")], {f"x-{n}": 0})
        assert await store.head_position() == 25 * 41
    finally:
        await store.close()
        await killer.dispose()
