"""Helpers for the read-side scenarios: command builders, a random workload, a Redis dump and
the document cache's feed."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from app.domain import commands as c
from app.domain.schema import default_schema
from app.event_store.base import EventStore
from app.projections.documents import Change
from app.projector.loop import Projector
from app.read_model.cache import DocumentCache
from app.read_model.changes import Batch
from app.read_model.layout import Keys
from app.service.handlers import CommandContext, CommandHandlers

TODAY = dt.date(2026, 11, 26)
ADULT = dt.date(1990, 5, 17)
CTX = CommandContext(correlation_id="t")


def command_handlers(store: EventStore) -> CommandHandlers:
    """The real handlers, with a fixed clock so ages do not depend on the day the tests run."""
    return CommandHandlers(store, default_schema(), today=lambda: TODAY)


def new_location(n: int, location_id: int | None = None) -> c.CreateLocation:
    return c.CreateLocation(f"{n} Main Street", "Springfield", "IL", f"{62700 + n}", location_id)


def new_employee(
    n: int, location_id: int, employee_id: int | None = None, job_title: str = "Cook"
) -> c.CreateEmployee:
    return c.CreateEmployee(f"First{n}", f"Last{n}", ADULT, job_title, location_id, employee_id)


@dataclass
class Company:
    """The company a workload leaves: location ids, live employees' locations and titles."""

    locations: set[int] = field(default_factory=set)
    employees: dict[int, int] = field(default_factory=dict)
    titles: dict[int, str] = field(default_factory=dict)

    def staff(self, location_id: int) -> list[int]:
        return sorted(e for e, at in self.employees.items() if at == location_id)


async def workload(
    handlers: CommandHandlers, seed: int, events: int, company: Company | None = None
) -> Company:
    """Hires, moves, title changes and terminations at random until the log has `events` events.

    Starts by opening four locations, unless it goes on with the `company` of an earlier run.
    """
    rng = random.Random(seed)
    position = 0
    if company is None:
        company = Company()
        for n in range(4):
            made = await handlers.create_location(new_location(n), CTX)
            company.locations.add(made.entity_id)
            position = made.position
    while position < events:
        live = sorted(company.employees)
        roll = rng.random()
        if not live or roll < 0.45:
            at = rng.choice(sorted(company.locations))
            made = await handlers.create_employee(new_employee(position, at), CTX)
            company.employees[made.entity_id] = at
            company.titles[made.entity_id] = "Cook"
        elif roll < 0.7:
            who = rng.choice(live)
            to = rng.choice(sorted(company.locations - {company.employees[who]}))
            made = await handlers.assign_employee_to_location(
                c.AssignEmployeeToLocation(who, to), CTX
            )
            company.employees[who] = to
        elif roll < 0.85:
            who = rng.choice(live)
            title = f"Title {position}"
            made = await handlers.change_employee_job_title(
                c.ChangeEmployeeJobTitle(who, title), CTX
            )
            company.titles[who] = title
        else:
            who = rng.choice(live)
            made = await handlers.terminate_employee(c.TerminateEmployee(who), CTX)
            del company.employees[who], company.titles[who]
        position = made.position
    return company


async def dump(redis: Redis, keys: Keys) -> dict[str, Any]:
    """Every key of one read model, without its prefix, as (type, content read by type)."""
    names = sorted([key async for key in redis.scan_iter(match=keys.pattern(), count=1000)])
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.type(name)
        kinds: list[str] = await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for name, kind in zip(names, kinds, strict=True):
            if kind == "string":
                pipe.get(name)
            elif kind == "zset":
                pipe.zrange(name, 0, -1, withscores=True)
            elif kind == "hash":
                pipe.hgetall(name)
            elif kind == "set":
                pipe.smembers(name)
            elif kind == "list":
                pipe.lrange(name, 0, -1)
            else:
                pipe.dump(name)
        values = await pipe.execute()
    return {
        name.removeprefix(keys.prefix + ":"): (kind, _plain(kind, value))
        for name, kind, value in zip(names, kinds, values, strict=True)
    }


def _plain(kind: str, value: Any) -> Any:
    """Comparable content: JSON strings parsed, zsets as (member, score) pairs, sets sorted."""
    if kind == "string":
        return json.loads(value)
    if kind == "zset":
        return [(member, score) for member, score in value]
    if kind == "set":
        return sorted(value)
    return value


def current_state(model: dict[str, Any]) -> dict[str, Any]:
    """The keys of a dump that hold the present (not the time-travel history beside it)."""
    return {
        name: value for name, value in model.items()
        if name in ("checkpoint", "locations", "employees")
        or name.startswith(("location:", "employee:"))
    }


async def project_fully(
    store: EventStore, redis: Redis, keys: Keys, batch_size: int = 500
) -> Projector:
    """A fresh projector that has caught up with the whole log."""
    projector = Projector(store, redis, keys, batch_size=batch_size)
    await projector.catch_up()
    return projector


async def delete_all(redis: Redis, keys: Keys) -> None:
    found = [key async for key in redis.scan_iter(match=keys.pattern(), count=1000)]
    if found:
        await redis.delete(*found)


def batch(start: int, end: int, *changes: tuple[int, int, str]) -> Batch:
    """A change-feed batch of positions (start, end], with (position, employee id, job title)
    changes."""
    return Batch(start, end, [
        Change(position, "UPDATED", "employee", employee, {"id": employee, "job_title": title})
        for position, employee, title in changes
    ], [])


def titles(cache: DocumentCache, *ids: int) -> list[str | None]:
    """The job titles the cache answers for these employees (None: it has no answer)."""
    return [entry[1]["job_title"] if entry is not None and entry[1] is not None else None
            for entry in cache.lookup("employee", ids)]
