"""Mutations: each input becomes one command; the payload waits until the read model shows it."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import strawberry
from redis.exceptions import RedisError

from app.auth import ADMIN
from app.domain import commands as c
from app.domain.errors import DomainError
from app.event_store.base import StoreUnavailable
from app.observability import COMMANDS, REJECTIONS
from app.projections import batch
from app.projections.documents import Doc, DocKey
from app.schema import described
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

IDEMPOTENCY_KEY = (
    "Any text of yours naming this command (a UUID, say). Sending the same key again returns "
    "the first result (same entity, same position) and writes nothing: retry a mutation whose "
    "answer you did not get with the same key. The same key with a different input is refused "
    "(IDEMPOTENCY_KEY_REUSED)."
)
EXPECTED_VERSION = (
    "The employee's `version` as you last read it: if it changed since, nothing is written and "
    "the answer is a ConflictError. Leave it out to apply the change to whatever version is "
    "current."
)
POSITION = (
    "The position (in the event store's global order) of the command's last event. Pass it as "
    "minPosition to a later query to be sure that it shows this write."
)


# The one argument of every mutation.
INPUT = strawberry.argument(description="The command: what to do, with its parameters.")


def text(description: str) -> Any:
    """An input's text field, with its limits stated after `description`."""
    return strawberry.field(description=(
        f"{description} Not blank, at most 200 characters, no control characters."
    ))


@strawberry.input(description="A new location.")
class CreateLocationInput:
    street_address: str = text("Street and number.")
    city: str = text("City.")
    state: str = text("State or region.")
    postal_code: str = text("Postal code.")
    id: int | None = strawberry.field(default=None, description=(
        "The id to give it, 1..2147483647; left out, the next free id is used."
    ))
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="A hire: a new employee and the location they start at.")
class CreateEmployeeInput:
    first_name: str = text("First name.")
    last_name: str = text("Last name.")
    date_of_birth: dt.date = strawberry.field(description=(
        "Date of birth (YYYY-MM-DD); the employee must be 16 or older today."
    ))
    job_title: str = text("Job title.")
    location_id: int = strawberry.field(description="The location they start at; it must exist.")
    id: int | None = strawberry.field(default=None, description=(
        "The id to give them, 1..2147483647; left out, the next free id is used."
    ))
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="A move of an employee to another location.")
class AssignEmployeeToLocationInput:
    employee_id: int = strawberry.field(description="The employee to move.")
    location_id: int = strawberry.field(description="The location to move them to.")
    expected_version: int | None = strawberry.field(default=None, description=EXPECTED_VERSION)
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="A new job title for an employee.")
class ChangeEmployeeJobTitleInput:
    employee_id: int = strawberry.field(description="The employee.")
    job_title: str = text("The new job title.")
    expected_version: int | None = strawberry.field(default=None, description=EXPECTED_VERSION)
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="The end of an employment.")
class TerminateEmployeeInput:
    employee_id: int = strawberry.field(description="The employee whose employment ends.")
    expected_version: int | None = strawberry.field(default=None, description=EXPECTED_VERSION)
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="An employee's request to be forgotten.")
class ForgetEmployeeInput:
    employee_id: int = strawberry.field(description=(
        "The employee whose personal data (names, date of birth) is erased; current or "
        "terminated."
    ))
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.type(description="A location was written.")
class LocationPayload:
    location: Location = strawberry.field(description="The location as it is after the command.")
    position: int = strawberry.field(description=POSITION)


@strawberry.type(description="An employee was written.")
class EmployeePayload:
    employee: Employee = strawberry.field(description=(
        "The employee as they are after the command."
    ))
    position: int = strawberry.field(description=POSITION)


@strawberry.type(description="An employment ended.")
class TerminatePayload:
    employee_id: int = strawberry.field(description=(
        "The employee terminated (no longer found from now on)."
    ))
    position: int = strawberry.field(description=POSITION)


@strawberry.type(description="An employee's personal data was erased.")
class ForgetEmployeePayload:
    employee_id: int = strawberry.field(description="The employee forgotten.")
    position: int = strawberry.field(description=(
        "The position of the erasure (EmployeePersonalDataErased); for an employee forgotten "
        "before, the position of that first erasure. Pass it as minPosition to a later query "
        "to be sure that it shows the erasure."
    ))


CreateLocationResult = Annotated[
    LocationPayload | ValidationError | AlreadyExistsError,
    strawberry.union("CreateLocationResult", description=(
        "The new location, or why it was not opened."
    )),
]
CreateEmployeeResult = Annotated[
    EmployeePayload | ValidationError | AlreadyExistsError | NotFoundError,
    strawberry.union("CreateEmployeeResult", description=(
        "The new employee, or why they were not hired (NotFoundError: no such location)."
    )),
]
AssignEmployeeToLocationResult = Annotated[
    EmployeePayload | ValidationError | NotFoundError | RuleViolationError | ConflictError,
    strawberry.union("AssignEmployeeToLocationResult", description=(
        "The moved employee, or why they were not moved."
    )),
]
ChangeEmployeeJobTitleResult = Annotated[
    EmployeePayload | ValidationError | NotFoundError | ConflictError,
    strawberry.union("ChangeEmployeeJobTitleResult", description=(
        "The employee with their new title, or why it was not changed."
    )),
]
TerminateEmployeeResult = Annotated[
    TerminatePayload | NotFoundError | ConflictError,
    strawberry.union("TerminateEmployeeResult", description=(
        "The terminated employee's id, or why the employment did not end."
    )),
]

ForgetEmployeeResult = Annotated[
    ForgetEmployeePayload | NotFoundError,
    strawberry.union("ForgetEmployeeResult", description=(
        "The erasure, or NotFoundError when no employee with this id ever existed."
    )),
]


async def _on_every_replica(info: Info, position: int) -> None:
    """Before an erasure answers: every Redis replica holds it, whichever one a process reads
    (the payload itself waited only for the node this process reads)."""
    services = info.context.services
    bound = services.settings.read_model_wait_seconds
    try:
        if await services.read_model.replicated(position, bound):
            return
        log.warning("an erasure at %d did not reach every Redis replica within %ss",
                    position, bound)
    except (RedisError, OSError) as error:
        log.warning("could not wait for the Redis replicas: %s", error)


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


@strawberry.type(description=(
    "Every mutation is one command: its events are appended to the event store together, or "
    "nothing is written. It answers once the read model shows its effect (or, if the projector "
    "takes longer than READ_MODEL_WAIT_SECONDS, with the entity as last projected). Expected "
    "refusals are members of the result union; the writer role is needed when authentication "
    "is on (else UNAUTHENTICATED or FORBIDDEN)."
))
class Mutation:
    @described.mutation(
        "Open a location: event LocationCreated."
    )
    async def create_location(
        self, info: Info, input: Annotated[CreateLocationInput, INPUT]
    ) -> CreateLocationResult:
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

    @described.mutation(
        "Hire someone at a location: events EmployeeCreated and EmployeeAssignedToLocation, "
        "committed together."
    )
    async def create_employee(
        self, info: Info, input: Annotated[CreateEmployeeInput, INPUT]
    ) -> CreateEmployeeResult:
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

    @described.mutation(
        "Move an employee to another location: EmployeeRemovedFromLocation (the old one) and "
        "EmployeeAssignedToLocation (the new one), committed together."
    )
    async def assign_employee_to_location(
        self, info: Info, input: Annotated[AssignEmployeeToLocationInput, INPUT]
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

    @described.mutation("Change an employee's job title: EmployeeJobTitleChanged.")
    async def change_employee_job_title(
        self, info: Info, input: Annotated[ChangeEmployeeJobTitleInput, INPUT]
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

    @described.mutation(
        "End an employment: EmployeeRemovedFromLocation and EmployeeTerminated, committed "
        "together. The employee is no longer found afterwards (but still is in the past: "
        "asOf / atPosition before it)."
    )
    async def terminate_employee(
        self, info: Info, input: Annotated[TerminateEmployeeInput, INPUT]
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

    @described.mutation(
        "Erase an employee's personal data (a request to be forgotten), employed or "
        "terminated: event EmployeePersonalDataErased. Their key is destroyed, so their names "
        "and date of birth read null everywhere from then on: now, in the past (asOf / "
        "atPosition), in the events log and feed. Other fields stay. Forgetting someone "
        "forgotten before writes nothing and answers with the first erasure. Needs the admin "
        "role when authentication is on (else FORBIDDEN)."
    )
    async def forget_employee(
        self, info: Info, input: Annotated[ForgetEmployeeInput, INPUT]
    ) -> ForgetEmployeeResult:
        principal = info.context.principal
        if principal is not None and not principal.allows(ADMIN):
            REJECTIONS.labels("forbidden").inc()
            raise ClientError("This operation needs the admin role.", "FORBIDDEN")
        command = c.ForgetEmployee(input.employee_id)
        handlers = info.context.services.handlers
        outcome = await execute(
            info, handlers.forget_employee, command, input.idempotency_key, (NotFoundError,),
        )
        if not isinstance(outcome, CommandResult):
            return outcome  # type: ignore[no-any-return]
        await _on_every_replica(info, outcome.position)
        return ForgetEmployeePayload(employee_id=outcome.entity_id, position=outcome.position)
