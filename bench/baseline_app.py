"""Baselines for the HTTP benchmarks, with the uvicorn settings of `python -m app serve`.

- `/graphql`: a strawberry schema of the same shape as ours (`employee(id)`, `location(id)` with its
  `employees`, `changeEmployeeJobTitle(input)` returning the same union) whose resolvers return
  constants: the cost of GraphQL over HTTP with nothing behind it.
- `/get/{id}`: a bare Starlette endpoint doing one Redis GET of an employee document: the floor of
  a query answered from Redis.

    BASELINE_REDIS_URL=… BASELINE_PREFIX=… python -m bench.baseline_app --port 8001
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from typing import Annotated

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from app.read_model.client import connect

PER_LOCATION = int(os.environ.get("BASELINE_EMPLOYEES_PER_LOCATION", "50"))
MOMENT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@strawberry.type
class Employee:
    id: int
    first_name: str
    last_name: str
    date_of_birth: dt.date
    job_title: str
    location_id: int
    version: int
    updated_at: dt.datetime

    @strawberry.field
    async def location(self) -> Location | None:
        return location_of(self.location_id)


@strawberry.type
class Location:
    id: int
    street_address: str
    city: str
    state: str
    postal_code: str
    version: int
    updated_at: dt.datetime

    @strawberry.field
    def employee_count(self) -> int:
        return PER_LOCATION

    @strawberry.field
    async def employees(self) -> list[Employee]:
        first = (self.id - 1) * PER_LOCATION + 1
        return [employee_of(n) for n in range(first, first + PER_LOCATION)]


def employee_of(n: int) -> Employee:
    return Employee(id=n, first_name=f"First{n}", last_name="Last",
                    date_of_birth=dt.date(1990, 1, 1), job_title="Cook",
                    location_id=1 + (n - 1) // PER_LOCATION, version=3, updated_at=MOMENT)


def location_of(n: int) -> Location:
    return Location(id=n, street_address=f"{n} Main", city="Town", state="ST",
                    postal_code=f"{n:05d}", version=1, updated_at=MOMENT)


@strawberry.input
class ChangeEmployeeJobTitleInput:
    employee_id: int
    job_title: str
    expected_version: int | None = None
    idempotency_key: str | None = None


@strawberry.type
class EmployeePayload:
    employee: Employee
    position: int


@strawberry.type
class NotFoundError:
    message: str
    code: str


ChangeEmployeeJobTitleResult = Annotated[
    EmployeePayload | NotFoundError, strawberry.union("ChangeEmployeeJobTitleResult")
]


@strawberry.type
class Query:
    @strawberry.field
    async def employee(self, id: int, min_position: int | None = None) -> Employee | None:
        return employee_of(id)

    @strawberry.field
    async def location(self, id: int, min_position: int | None = None) -> Location | None:
        return location_of(id)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def change_employee_job_title(
        self, input: ChangeEmployeeJobTitleInput
    ) -> ChangeEmployeeJobTitleResult:
        employee = employee_of(input.employee_id)
        employee.job_title = input.job_title
        return EmployeePayload(employee=employee, position=1)


def create_app() -> Starlette:
    schema = strawberry.Schema(
        query=Query, mutation=Mutation,
        extensions=[lambda: ParserCache(maxsize=256), lambda: ValidationCache(maxsize=256)],
    )
    redis = connect(os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/2"))
    prefix = os.environ.get("BASELINE_PREFIX", "cqrs")

    async def get(request: Request) -> Response:
        doc = await redis.get(f"{prefix}:employee:{request.path_params['id']}")
        return Response(doc or "null", media_type="application/json")

    return Starlette(routes=[
        Route("/graphql", GraphQL(schema, graphql_ide=None), methods=["GET", "POST"]),
        Route("/get/{id:int}", get),
        Route("/readyz", lambda _request: Response("ok")),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The settings of `python -m app serve` (app/cli.py): one worker, uvicorn's defaults otherwise
    # (serve's own HTTP protocol, which bounds request heads, costs it ≈ 3 µs of CPU a request).
    uvicorn.run("bench.baseline_app:create_app", factory=True, host="127.0.0.1", port=args.port,
                workers=1, log_config=None, ws="websockets-sansio", ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
