"""Mutations: each input becomes one command; the payload waits until the read model shows it."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import strawberry
from redis.exceptions import RedisError

from app.domain import commands as c
from app.domain.errors import DomainError
from app.event_store.base import StoreUnavailable
from app.observability import COMMANDS
from app.projections import batch
from app.projections.documents import Doc, DocKey
from app.schema.context import Context
from app.schema.errors import (
    AlreadyExistsError,
    ClientError,
    ConflictError,
    NotFoundError,
    RuleViolationError,
    ValidationError,
    to_graphql,
)
from app.schema.types import Employee, Location
from app.service.handlers import CommandContext, CommandResult

log = logging.getLogger(__name__)
Info = strawberry.Info[Context, None]
C = TypeVar("C")


@strawberry.input
class CreateLocationInput:
    street_address: str
    city: str
    state: str
    postal_code: str
    id: int | None = None
    idempotency_key: str | None = None


@strawberry.input
class CreateEmployeeInput:
    first_name: str
    last_name: str
    date_of_birth: dt.date
    job_title: str
    location_id: int
    id: int | None = None
    idempotency_key: str | None = None


@strawberry.input
class AssignEmployeeToLocationInput:
    employee_id: int
    location_id: int
    expected_version: int | None = None
    idempotency_key: str | None = None


@strawberry.input
class ChangeEmployeeJobTitleInput:
    employee_id: int
    job_title: str
    expected_version: int | None = None
    idempotency_key: str | None = None


@strawberry.input
class TerminateEmployeeInput:
    employee_id: int
    expected_version: int | None = None
    idempotency_key: str | None = None


@strawberry.type
class LocationPayload:
    location: Location
    position: int


@strawberry.type
class EmployeePayload:
    employee: Employee
    position: int


@strawberry.type
class TerminatePayload:
    employee_id: int
    position: int


CreateLocationResult = Annotated[
    LocationPayload | ValidationError | AlreadyExistsError,
    strawberry.union("CreateLocationResult"),
]
CreateEmployeeResult = Annotated[
    EmployeePayload | ValidationError | AlreadyExistsError | NotFoundError,
    strawberry.union("CreateEmployeeResult"),
]
AssignEmployeeToLocationResult = Annotated[
    EmployeePayload | ValidationError | NotFoundError | RuleViolationError | ConflictError,
    strawberry.union("AssignEmployeeToLocationResult"),
]
ChangeEmployeeJobTitleResult = Annotated[
    EmployeePayload | ValidationError | NotFoundError | ConflictError,
    strawberry.union("ChangeEmployeeJobTitleResult"),
]
TerminateEmployeeResult = Annotated[
    TerminatePayload | NotFoundError | ConflictError,
    strawberry.union("TerminateEmployeeResult"),
]


async def execute(
    info: Info,
    handler: Callable[[C, CommandContext], Awaitable[CommandResult]],
    command: C,
    idempotency_key: str | None,
    allowed: tuple[type, ...],
) -> CommandResult | Any:
    """Run a command; a domain error becomes its union member, success waits for projection."""
    services = info.context.services
    principal = info.context.principal
    ctx = CommandContext(
        info.context.correlation_id,
        actor=principal.name if principal is not None else None,
        idempotency_key=idempotency_key,
    )
    started, outcome = time.perf_counter(), "error"
    try:
        result = await handler(command, ctx)
        outcome = "replayed" if result.replayed else "ok"
    except DomainError as error:
        outcome = error.code
        return to_graphql(error, allowed)
    except StoreUnavailable as error:
        log.error("event store unavailable: %s", error)
        raise ClientError(
            "The event store is unavailable; nothing was written. Try again later.",
            "STORE_UNAVAILABLE",
        ) from error
    finally:
        COMMANDS.labels(type(command).__name__, outcome).observe(time.perf_counter() - started)
    bound = services.settings.read_model_wait_seconds
    if not await services.waiter.wait_for(result.position, bound):
        log.warning("read model did not reach %d within %ss", result.position, bound)
    return result


async def projected(info: Info, key: DocKey, position: int) -> Doc:
    """The entity as last projected; if it is not there (not yet projected, or already removed
    by a later command), as its own stream left it at the command's `position`."""
    try:
        doc = await info.context.doc(key[0], key[1], None)
    except (RedisError, OSError) as error:  # the write happened; report it from the store
        log.warning("read model unreachable, answering from the event store: %s", error)
        doc = None
    if doc is not None:
        return doc
    stream = await info.context.services.store.read_stream(f"{key[0]}-{key[1]}")
    built = batch.apply(
        batch.decode(e for e in stream if e.position <= position), {}
    ).docs.get(key)
    if built is None:
        raise ClientError("The entity is not in the read model yet.", "STALE_READ_MODEL")
    return built


async def employee_payload(info: Info, outcome: CommandResult | Any) -> Any:
    if not isinstance(outcome, CommandResult):
        return outcome
    doc = await projected(info, ("employee", outcome.entity_id), outcome.position)
    return EmployeePayload(employee=Employee.from_doc(doc), position=outcome.position)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_location(self, info: Info, input: CreateLocationInput) -> CreateLocationResult:
        command = c.CreateLocation(
            input.street_address, input.city, input.state, input.postal_code, input.id
        )
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.create_location, command, input.idempotency_key,
            (ValidationError, AlreadyExistsError),
        )
        if not isinstance(outcome, CommandResult):
            return outcome  # type: ignore[no-any-return]
        doc = await projected(info, ("location", outcome.entity_id), outcome.position)
        return LocationPayload(location=Location.from_doc(doc), position=outcome.position)

    @strawberry.mutation
    async def create_employee(self, info: Info, input: CreateEmployeeInput) -> CreateEmployeeResult:
        command = c.CreateEmployee(
            input.first_name, input.last_name, input.date_of_birth, input.job_title,
            input.location_id, input.id,
        )
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.create_employee, command, input.idempotency_key,
            (ValidationError, AlreadyExistsError, NotFoundError),
        )
        return await employee_payload(info, outcome)  # type: ignore[no-any-return]

    @strawberry.mutation
    async def assign_employee_to_location(
        self, info: Info, input: AssignEmployeeToLocationInput
    ) -> AssignEmployeeToLocationResult:
        command = c.AssignEmployeeToLocation(
            input.employee_id, input.location_id, input.expected_version
        )
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.assign_employee_to_location, command, input.idempotency_key,
            (ValidationError, NotFoundError, RuleViolationError, ConflictError),
        )
        return await employee_payload(info, outcome)  # type: ignore[no-any-return]

    @strawberry.mutation
    async def change_employee_job_title(
        self, info: Info, input: ChangeEmployeeJobTitleInput
    ) -> ChangeEmployeeJobTitleResult:
        command = c.ChangeEmployeeJobTitle(
            input.employee_id, input.job_title, input.expected_version
        )
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.change_employee_job_title, command, input.idempotency_key,
            (ValidationError, NotFoundError, ConflictError),
        )
        return await employee_payload(info, outcome)  # type: ignore[no-any-return]

    @strawberry.mutation
    async def terminate_employee(
        self, info: Info, input: TerminateEmployeeInput
    ) -> TerminateEmployeeResult:
        command = c.TerminateEmployee(input.employee_id, input.expected_version)
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.terminate_employee, command, input.idempotency_key,
            (NotFoundError, ConflictError),
        )
        if not isinstance(outcome, CommandResult):
            return outcome  # type: ignore[no-any-return]
        return TerminatePayload(employee_id=outcome.entity_id, position=outcome.position)
