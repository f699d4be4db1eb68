"""What the limits that bound work cost a query: the cost check and the sliced execution.

The schema runs in-process over services from the real composition root (SQLite and the Redis
read model holding 1 location × 100 employees) and executes
  employee(id) { 7 fields }       ids cycling over the 100 employees, from the document cache
as three schemas over the same services, interleaved in every repeat:
  ours        MAX_QUERY_COST on (the default) and sliced execution (app/schema/execution.py);
  no cost     MAX_QUERY_COST=0: the cost check is the only difference;
  unsliced    strawberry's own execution context instead of the sliced one.
Each repeat alternates the three every 200 operations, 25 times. Figures are CPU microseconds
per operation; goal: the cost check adds < 3 %.

    python -m bench.limits [--quick] [--repeats N] [--redis-url URL]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.bootstrap import Services, bootstrap
from app.schema import Schema, build_schema
from app.schema.context import Context
from app.settings import Settings
from bench.common import (
    Figure,
    Options,
    cli,
    drop_prefix,
    median,
    progress,
    redis_server,
    unique_prefix,
)

EMPLOYEES = 100
ROUNDS = 25
EMPLOYEE = ("query($id: Int!) { employee(id: $id) { "
            "id firstName lastName jobTitle locationId version updatedAt } }")
LOCATION = ("mutation($input: CreateLocationInput!) { createLocation(input: $input) { "
            "__typename } }")
HIRE = "mutation($input: CreateEmployeeInput!) { createEmployee(input: $input) { __typename } }"


async def cpu_per_operation(schema: Schema, services: Services, operations: int) -> float:
    """CPU µs per employee(id), ids cycling, each with its own context as over HTTP; every
    answer checked."""
    started = time.process_time()
    for n in range(operations):
        context = Context(services, "bench")
        result = await schema.execute(EMPLOYEE, {"id": n % EMPLOYEES + 1}, context)
        assert result.errors is None and result.data and result.data["employee"], result
    return (time.process_time() - started) / operations * 1e6


async def measure(options: Options, redis_url: str) -> dict[str, list[float]]:
    operations = ROUNDS * (8 if options.quick else 200)
    prefix = unique_prefix("limits")
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(work) / 'events.db'}",
            redis_url=redis_url, redis_prefix=prefix, var_dir=Path(work) / "var",
        )
        try:
            async with bootstrap(settings) as services:
                schemas = {
                    "ours": build_schema(settings),
                    "no cost": build_schema(settings.model_copy(update={"max_query_cost": 0})),
                    "unsliced": build_schema(settings),
                }
                schemas["unsliced"].execution_context_class = StrawberryGraphQLCoreExecutionContext
                await seed(schemas["ours"], Context(services, "bench"))
                await services.projector.catch_up()
                times: dict[str, list[float]] = {name: [] for name in schemas}
                for schema in schemas.values():  # warm: prepared documents, caches
                    await cpu_per_operation(schema, services, EMPLOYEES)
                for _ in range(options.repeats):
                    # finely interleaved: the machine's drift hits the three alike
                    spent = dict.fromkeys(schemas, 0.0)
                    for _ in range(ROUNDS):
                        for name, schema in schemas.items():
                            spent[name] += await cpu_per_operation(
                                schema, services, operations // ROUNDS)
                    for name in schemas:
                        times[name].append(spent[name] / ROUNDS)
        finally:
            await drop_prefix(redis_url, prefix)
    return times


async def seed(schema: Schema, context: Context) -> None:
    result = await schema.execute(LOCATION, {"input": {
        "id": 1, "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
        "postalCode": "62701"}}, context)
    assert result.errors is None, result.errors
    for n in range(1, EMPLOYEES + 1):
        result = await schema.execute(HIRE, {"input": {
            "id": n, "firstName": "Ada", "lastName": "Lovelace", "dateOfBirth": "1990-01-01",
            "jobTitle": "Cook", "locationId": 1}}, context)
        assert result.errors is None, result.errors


def run(options: Options) -> list[Figure]:
    progress(f"limits: employee(id) in-process, {options.repeats} repeats")
    with redis_server(options.redis_url) as redis_url:
        times = asyncio.run(measure(options, redis_url))
    ours, no_cost, unsliced = (median(times[k]) for k in ("ours", "no cost", "unsliced"))
    return [
        Figure("limits", "CPU per employee(id) with the cost check", ours, "µs",
               "MAX_QUERY_COST=0", no_cost, 1.03, higher_is_better=False),
        Figure("limits", "CPU per employee(id) with sliced execution", ours, "µs",
               "strawberry's execution context", unsliced, higher_is_better=False),
    ]


cli(__name__, run, __doc__)
