"""The projector against real Valkey and Redis: every event applied exactly once, whatever happens.

Events are written through the real command handlers; the read model is read back key by key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store import open_store
from app.event_store.base import EventStore
from app.projector import loop as projector_module
from app.projector.loop import Projector
from app.read_model import changes
from app.read_model.changes import Batch
from app.read_model.layout import Keys
from app.read_model.redis import ReadModel
from tests.harness.environment import app_environment
from tests.harness.projection_support import (
    ADULT,
    CTX,
    Company,
    command_handlers,
    current_state,
    delete_all,
    dump,
    new_employee,
    new_location,
    project_fully,
    workload,
)

SECONDS = 30.0  # bound on every wait for a projector; reaching it fails the test


@pytest.fixture
async def spare_keys(redis: Redis, keys: Keys) -> AsyncIterator[Keys]:
    """A second read model on the same server, for an uninterrupted reference projection."""
    spare = Keys(f"{keys.prefix}-reference")
    yield spare
    await delete_all(redis, spare)


async def checkpoint_of(redis: Redis, keys: Keys) -> int:
    return int(await redis.get(keys.checkpoint) or 0)


def location_doc(n: int, location_id: int, employee_ids: list[int], position: int,
                 recorded: dict[int, str]) -> dict[str, Any]:
    return {
        "id": location_id, "street_address": f"{n} Main Street", "city": "Springfield",
        "state": "IL", "postal_code": f"{62700 + n}", "employee_ids": employee_ids,
        "version": 1, "updated_at": recorded[position], "position": position,
    }


def employee_doc(n: int, employee_id: int, location_id: int, job_title: str, version: int,
                 position: int, recorded: dict[int, str]) -> dict[str, Any]:
    return {
        "id": employee_id, "first_name": f"First{n}", "last_name": f"Last{n}",
        "date_of_birth": ADULT.isoformat(), "job_title": job_title, "location_id": location_id,
        "personal_data_erased": False,
        "version": version, "updated_at": recorded[position], "position": position,
    }


async def test_catch_up_leaves_exactly_the_documents_the_commands_imply(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    # given: two locations, three hires, a move, a new job title and a termination
    handlers = command_handlers(store)
    await handlers.create_location(new_location(1), CTX)
    await handlers.create_location(new_location(2, location_id=7), CTX)
    await handlers.create_employee(new_employee(1, location_id=1), CTX)
    await handlers.create_employee(new_employee(2, location_id=1, employee_id=5), CTX)
    await handlers.create_employee(new_employee(3, location_id=7), CTX)
    await handlers.assign_employee_to_location(c.AssignEmployeeToLocation(1, 7), CTX)
    await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(5, "Chef"), CTX)
    last = await handlers.terminate_employee(c.TerminateEmployee(6), CTX)

    # when
    await Projector(store, redis, keys, batch_size=4).catch_up()

    # then
    recorded = {e.position: e.recorded_at.isoformat() for e in await store.read_all(0, 100)}
    read_model = ReadModel(redis, keys)
    assert await read_model.checkpoint() == await store.head_position() == last.position == 13
    assert await read_model.all_locations() == [
        location_doc(1, 1, [5], 1, recorded),
        location_doc(2, 7, [1], 2, recorded),
    ]
    assert await read_model.employees([1, 5, 6]) == [
        employee_doc(1, 1, 7, "Cook", 4, 10, recorded),
        employee_doc(2, 5, 1, "Chef", 3, 11, recorded),
        None,
    ]
    page = await read_model.employee_page(after_id=0, first=10)
    assert ([d["id"] for d in page.docs], page.has_next, page.total) == ([1, 5], False, 2)
    assert current_state(await dump(redis, keys)) == {
        "checkpoint": ("string", 13),
        "locations": ("zset", [("1", 1.0), ("7", 7.0)]),
        "employees": ("zset", [("1", 1.0), ("5", 5.0)]),
        "location:1": ("string", location_doc(1, 1, [5], 1, recorded)),
        "location:7": ("string", location_doc(2, 7, [1], 2, recorded)),
        "employee:1": ("string", employee_doc(1, 1, 7, "Cook", 4, 10, recorded)),
        "employee:5": ("string", employee_doc(2, 5, 1, "Chef", 3, 11, recorded)),
    }


async def run_until_cancelled(
    store: EventStore, redis_url: str, keys: Keys, target: int, ticks: int
) -> None:
    """A fresh projector (own connection) runs until it has passed `target`, then is cancelled
    `ticks` event-loop turns later: anywhere in a batch, including inside MULTI/EXEC."""
    client = Redis.from_url(redis_url, decode_responses=True)
    projector = Projector(store, client, keys, batch_size=7)
    reached = asyncio.Event()

    async def note(position: int) -> None:
        if position >= target:
            reached.set()

    projector.on_checkpoint(note)
    running = asyncio.create_task(projector.run())
    waiting = asyncio.create_task(reached.wait())
    try:
        done, _ = await asyncio.wait(
            {running, waiting}, timeout=SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        assert waiting in done, f"the projector stopped short of {target}"
        for _ in range(ticks):
            await asyncio.sleep(0)
    finally:
        await cancelled(running, waiting)
        await client.aclose()


async def cancelled(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks; each must then stop within the bound, not go on running."""
    for task in tasks:
        task.cancel()
    _, still_running = await asyncio.wait(tasks, timeout=SECONDS)
    assert not still_running, f"ignored cancellation: {still_running}"


async def test_a_projector_cancelled_at_random_moments_resumes_without_loss_or_repeat(
    store: EventStore, redis: Redis, redis_url: str, keys: Keys, spare_keys: Keys
) -> None:
    # given ~300 events
    await workload(command_handlers(store), seed=7, events=300)
    head = await store.head_position()

    # when projectors are cancelled at random points, each restarted afresh, then one finishes
    rng = random.Random(2024)
    stopped_at: list[int] = []
    while len(stopped_at) < 8 and (not stopped_at or stopped_at[-1] < head - 80):
        target = (stopped_at[-1] if stopped_at else 0) + rng.randint(1, 30)
        await run_until_cancelled(store, redis_url, keys, target, ticks=rng.randint(0, 40))
        stopped_at.append(await checkpoint_of(redis, keys))
    await project_fully(store, redis, keys, batch_size=7)

    # then the result is the uninterrupted projection, key for key
    await project_fully(store, redis, spare_keys)
    assert len(stopped_at) >= 3 and all(0 < p < head for p in stopped_at), stopped_at
    assert stopped_at == sorted(stopped_at)
    assert await checkpoint_of(redis, keys) == head
    assert await dump(redis, keys) == await dump(redis, spare_keys)


async def test_a_cancelled_projector_stops_even_when_a_library_swallowed_the_cancellation(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    # given a projector whose listener swallows a cancellation, as Python 3.11's
    # asyncio.wait_for does (inside redis-py) when it races a finished operation
    await workload(command_handlers(store), seed=1, events=20)
    projector = Projector(store, redis, keys, batch_size=3)

    async def swallow(_position: int) -> None:
        this = asyncio.current_task()
        assert this is not None
        this.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)

    projector.on_checkpoint(swallow)

    # when it runs
    running = asyncio.create_task(projector.run())

    # then it stops at the next batch boundary, cancelled, instead of following forever
    done, _ = await asyncio.wait({running}, timeout=SECONDS)
    assert running in done and running.cancelled()
    assert 0 < await checkpoint_of(redis, keys) < await store.head_position()


@contextlib.asynccontextmanager
async def project_process(
    store_url: str, redis_url: str, keys: Keys, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m app project` in its own process, killed (SIGKILL) when the block ends."""
    env = app_environment(log.parent, {
        "DATABASE_URL": store_url, "REDIS_URL": redis_url, "REDIS_PREFIX": keys.prefix,
        "PROJECTOR_BATCH_SIZE": "1", "LOG_LEVEL": "WARNING",
    })
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "project", env=env, cwd=log.parent,
            stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()


async def active_checkpoint(redis: Redis, keys: Keys) -> int:
    pointer = await redis.get(keys.generation_pointer)
    return await checkpoint_of(redis, keys.at(int(pointer))) if pointer is not None else 0


async def until_switched(redis: Redis, keys: Keys, head: int) -> None:
    """Wait until no rebuild runs and the active generation holds the whole log."""
    async with asyncio.timeout(SECONDS):
        while True:
            building = await redis.exists(keys.rebuilding)
            if not building and await active_checkpoint(redis, keys) == head:
                return
            await asyncio.sleep(0.01)


async def until_built(
    redis: Redis, keys: Keys, process: asyncio.subprocess.Process, done: Callable[[int], bool],
    log: Path,
) -> None:
    """Poll until `done` holds for the furthest checkpoint of any generation (the one being
    built, or the active one); the process must stay alive meanwhile."""
    async with asyncio.timeout(SECONDS):
        while True:
            found = [k async for k in redis.scan_iter(match=f"{keys.base}:g*:checkpoint")]
            positions = [int(p) for p in await redis.mget(found) if p is not None] if found else []
            if positions and done(max(positions)):
                return
            if process.returncode is not None:
                output = await asyncio.to_thread(log.read_text)
                pytest.fail(f"`python -m app project` exited early:\n{output}")
            await asyncio.sleep(0.001)


async def test_a_project_process_killed_mid_catch_up_resumes_where_it_stopped(
    store: EventStore, store_url: str, redis: Redis, redis_url: str, keys: Keys,
    spare_keys: Keys, tmp_path: Path,
) -> None:
    # given ~150 events, no read model yet, and a `project` process killed -9 a quarter of the
    # way through building it
    await workload(command_handlers(store), seed=5, events=150)
    head = await store.head_position()
    log = tmp_path / "project.log"
    async with project_process(store_url, redis_url, keys, log) as process:
        await until_built(redis, keys, process, lambda p: p >= head // 4, log)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    building = json.loads(await redis.get(keys.rebuilding) or "null")["generation"]
    killed_at = await checkpoint_of(redis, keys.at(building))

    # when it is started again and left to finish
    async with project_process(store_url, redis_url, keys, log) as process:
        await until_switched(redis, keys, head)
        active = int(await redis.get(keys.generation_pointer) or 0)

    # then it finished the generation it had begun, and that is the uninterrupted projection
    assert 0 < killed_at < head
    assert active == building
    assert not await redis.exists(keys.rebuilding)
    await project_fully(store, redis, spare_keys)
    assert await dump(redis, keys.at(active)) == await dump(redis, spare_keys)


def assert_read_model_is(model: dict[str, Any], company: Company, head: int) -> None:
    """Every live employee in its one location's list, no duplicates, nobody else there."""
    assert model["checkpoint"] == ("string", head)
    for location_id in company.locations:
        _, doc = model[f"location:{location_id}"]
        assert doc["employee_ids"] == company.staff(location_id)
    employees = {
        int(name.split(":")[1]): doc for name, (_, doc) in model.items()
        if name.startswith("employee:")
    }
    assert {i: doc["location_id"] for i, doc in employees.items()} == company.employees
    assert {i: doc["job_title"] for i, doc in employees.items()} == company.titles


async def test_two_racing_projectors_apply_every_event_exactly_once(
    store: EventStore, redis: Redis, redis_url: str, keys: Keys, spare_keys: Keys
) -> None:
    # given a log of ~80 events and two projectors on the same read model, own connections
    handlers = command_handlers(store)
    company = await workload(handlers, seed=3, events=80)
    rival = Redis.from_url(redis_url, decode_responses=True)
    first = Projector(store, redis, keys, batch_size=5)
    second = Projector(store, rival, keys, batch_size=5)

    async def chase(projector: Projector, writing: asyncio.Task[Company]) -> None:
        while not writing.done():
            await projector.catch_up()
        await projector.catch_up()

    try:
        # when they race over the backlog, then over events still being written
        await asyncio.gather(first.catch_up(), second.catch_up())
        writing = asyncio.create_task(workload(handlers, seed=4, events=160, company=company))
        await asyncio.gather(writing, chase(first, writing), chase(second, writing))
    finally:
        await rival.aclose()

    # then each event was applied by exactly one of them, and the result is one projector's
    head = await store.head_position()
    assert first.events_applied + second.events_applied == head
    model = await dump(redis, keys)
    assert_read_model_is(model, company, head)
    await project_fully(store, redis, spare_keys)
    assert model == await dump(redis, spare_keys)


async def test_a_projector_builds_on_the_documents_it_wrote_and_remembers_only_a_few(
    store: EventStore, redis: Redis, keys: Keys, spare_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a projector that remembers at most 5 documents, caught up with a first workload
    monkeypatch.setattr(projector_module, "DOCUMENT_MEMORY", 5)
    handlers = command_handlers(store)
    company = await workload(handlers, seed=11, events=60)
    projector = Projector(store, redis, keys, batch_size=7)
    await projector.catch_up()

    # when more commands follow, each projected by a catch-up of its own
    for seed in range(12, 20):
        company = await workload(handlers, seed=seed, events=60 + 6 * (seed - 11),
                                 company=company)
        await projector.catch_up()
        remembered = projector._left
        # 5, or the documents of its latest batch (7 events touch at most 3 each)
        assert remembered is not None and len(remembered[1]) <= max(5, 3 * 7)

    # then the read model is exactly what a fresh projection of the whole log writes
    await project_fully(store, redis, spare_keys)
    assert await dump(redis, keys) == await dump(redis, spare_keys)

    # and a document it remembers is not read back: a change made behind its back (which no
    # projector makes without moving the checkpoint) is not what the next batch builds on
    employee_id = next(iter(company.employees))
    key = keys.employee(employee_id)
    await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(employee_id, "Host"), CTX)
    await projector.catch_up()
    written = json.loads(await redis.get(key) or "null")
    await redis.set(key, json.dumps({**written, "last_name": "Forged"}))
    await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(employee_id, "Chef"), CTX)
    await projector.catch_up()
    doc = json.loads(await redis.get(key) or "null")
    assert (doc["job_title"], doc["last_name"]) == ("Chef", written["last_name"])


async def test_a_batch_never_splits_the_events_of_one_command(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    # given hires (2 events), moves (2 events), terminations (2 events) and a title change (1)
    handlers = command_handlers(store)
    commits = [(await handlers.create_location(new_location(n), CTX)).position for n in (1, 2)]
    for n in range(1, 5):
        made = await handlers.create_employee(new_employee(n, location_id=1 + n % 2), CTX)
        commits.append(made.position)
    moves = [c.AssignEmployeeToLocation(1, 1), c.AssignEmployeeToLocation(2, 2)]
    commits += [(await handlers.assign_employee_to_location(m, CTX)).position for m in moves]
    retitle = c.ChangeEmployeeJobTitle(3, "Host")
    commits.append((await handlers.change_employee_job_title(retitle, CTX)).position)
    commits.append((await handlers.terminate_employee(c.TerminateEmployee(4), CTX)).position)
    commits.append((await handlers.create_employee(new_employee(5, location_id=2), CTX)).position)

    # when the projector takes one event at a time
    projector = Projector(store, redis, keys, batch_size=1)
    stopped_at = []

    async def committed(position: int) -> None:
        stopped_at.append(position)
        # then after every batch each projected employee has a location that lists it
        model = await dump(redis, keys)
        for key, (_, doc) in model.items():
            if key.startswith("employee:"):
                assert doc["location_id"] is not None, (key, doc)
                assert doc["id"] in model[f"location:{doc['location_id']}"][1]["employee_ids"]
            elif key.startswith("location:"):
                for member in doc["employee_ids"]:
                    assert model[f"employee:{member}"][1]["location_id"] == doc["id"]

    projector.on_checkpoint(committed)
    await projector.catch_up()

    # and every batch ended exactly at the end of one command
    assert stopped_at == commits
    assert projector.events_applied == await store.head_position() == 19


async def test_a_checkpoint_beyond_the_head_of_a_replaced_store_clears_the_read_model(
    store: EventStore, redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    # given a read model projected from a store of three commands
    handlers = command_handlers(store)
    await handlers.create_location(new_location(1), CTX)
    await handlers.create_location(new_location(2), CTX)
    await handlers.create_employee(new_employee(1, location_id=2), CTX)
    await project_fully(store, redis, keys)
    projected = await dump(redis, keys)
    await Projector(store, redis, keys).check_consistency()
    assert await dump(redis, keys) == projected  # consistent: left alone

    # when the store is replaced by one holding a single, different location
    replaced = await open_store(
        f"sqlite+aiosqlite:///{tmp_path / 'replaced.db'}", default_schema()
    )
    try:
        await command_handlers(replaced).create_location(new_location(9), CTX)
        projector = Projector(replaced, redis, keys)
        await projector.check_consistency()

        # then the read model is emptied, and catching up shows only the new store
        assert await dump(redis, keys) == {}
        await projector.catch_up()
    finally:
        await replaced.close()
    model = current_state(await dump(redis, keys))
    assert set(model) == {"checkpoint", "locations", "location:1"}
    assert model["checkpoint"] == ("string", 1)
    assert model["location:1"][1]["street_address"] == "9 Main Street"
    assert model["location:1"][1]["employee_ids"] == []


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    async with asyncio.timeout(SECONDS):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                parsed: dict[str, Any] = json.loads(message["data"])
                return parsed


async def subscribed(pubsub: PubSub, channel: str) -> None:
    """Subscribe and wait for the server's confirmation, so no later publish can be missed."""
    await pubsub.subscribe(channel)
    async with asyncio.timeout(SECONDS):
        while (await pubsub.get_message(timeout=1.0) or {}).get("type") != "subscribe":
            pass


def summary(change: dict[str, Any]) -> tuple[Any, ...]:
    return (change["position"], change["kind"], change["entity"], change["id"],
            change["previous_location_id"])


async def test_changes_are_published_after_each_commit_with_their_positions(
    store: EventStore, redis: Redis, keys: Keys, spare_keys: Keys
) -> None:
    # given six commands (positions 1, 2, 4, 6, 7, 9)
    handlers = command_handlers(store)
    await handlers.create_location(new_location(1), CTX)
    await handlers.create_location(new_location(2), CTX)
    await handlers.create_employee(new_employee(1, location_id=1), CTX)
    await handlers.assign_employee_to_location(c.AssignEmployeeToLocation(1, 2), CTX)
    await handlers.change_employee_job_title(c.ChangeEmployeeJobTitle(1, "Chef"), CTX)
    await handlers.terminate_employee(c.TerminateEmployee(1), CTX)

    async with redis.pubsub() as pubsub:
        await subscribed(pubsub, keys.changes_channel)
        # when a projector takes one command per batch
        projecting = asyncio.create_task(Projector(store, redis, keys, batch_size=1).catch_up())
        messages = []
        for _ in range(6):
            message = await next_message(pubsub)
            # then a subscriber that reads on receipt already sees the batch committed
            assert await checkpoint_of(redis, keys) >= message["position"]
            messages.append(message)
        await projecting

    assert [(m["position"], sorted(summary(ch) for ch in m["changes"])) for m in messages] == [
        (1, [(1, "CREATED", "location", 1, None)]),
        (2, [(2, "CREATED", "location", 2, None)]),
        (4, [(4, "CREATED", "employee", 1, None), (4, "UPDATED", "location", 1, None)]),
        (6, [(6, "UPDATED", "employee", 1, 1), (6, "UPDATED", "location", 1, None),
             (6, "UPDATED", "location", 2, None)]),
        (7, [(7, "UPDATED", "employee", 1, 2)]),
        (9, [(9, "REMOVED", "employee", 1, 2), (9, "UPDATED", "location", 2, None)]),
    ]
    docs = {(m["position"], ch["entity"], ch["id"]): ch["doc"] for m in messages
            for ch in m["changes"]}
    assert docs[4, "employee", 1]["location_id"] == 1
    assert docs[4, "location", 1]["employee_ids"] == [1]
    assert docs[6, "employee", 1]["location_id"] == 2
    assert (docs[6, "location", 1]["employee_ids"], docs[6, "location", 2]["employee_ids"]) == (
        [], [1],
    )
    assert docs[7, "employee", 1]["job_title"] == "Chef"
    assert docs[9, "employee", 1] is None
    assert docs[9, "location", 2]["employee_ids"] == []

    # and one batch of all six commands publishes one message with the same per-commit changes
    async with redis.pubsub() as pubsub:
        await subscribed(pubsub, spare_keys.changes_channel)
        await project_fully(store, redis, spare_keys)
        whole = await next_message(pubsub)
    assert whole["position"] == 9
    assert whole["changes"] == [ch for m in messages for ch in m["changes"]]


async def test_each_batch_handed_to_its_process_equals_the_message_the_feed_brings(
    store: EventStore, redis: Redis, keys: Keys
) -> None:
    # given a random history, with a forgotten employee (an erasing batch) in it
    handlers = command_handlers(store)
    company = await workload(handlers, seed=11, events=80)
    forgotten = min(company.employees)
    await handlers.forget_employee(c.ForgetEmployee(forgotten), CTX)
    await workload(handlers, seed=12, events=120, company=company)

    # when a projector applies it in small batches, handing each batch to its own process
    delivered: list[Batch] = []
    projector = Projector(store, redis, keys, batch_size=7)
    projector.on_batch(delivered.append)
    async with redis.pubsub() as pubsub:
        await subscribed(pubsub, keys.changes_channel)
        await projector.catch_up()
        raw: list[str] = []
        async with asyncio.timeout(SECONDS):
            while len(raw) < len(delivered):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    raw.append(message["data"])
    published = [changes.parse(message) for message in raw]

    # then every batch is handed over once, in order, equal to what the feed brings
    assert len(delivered) > 10
    assert delivered == published
    assert [b.from_position for b in delivered[1:]] == [b.position for b in delivered[:-1]]
    # and a process that has one can tell from the message's head alone; a switch is no batch
    assert [changes.peek(message) for message in raw] == [b.position for b in delivered]
    assert changes.peek(changes.encode_switch(delivered[-1].position, 2).decode()) is None
    erasing = [e for b in delivered for e in b.events if e["type"] == "EmployeePersonalDataErased"]
    assert erasing, "the history has its erasure"
