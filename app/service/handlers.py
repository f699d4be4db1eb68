"""Command handlers: load aggregates, let the domain decide, append atomically, retry conflicts."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.domain import commands as c
from app.domain import events as e
from app.domain import model
from app.domain.errors import Conflict, DomainError
from app.domain.schema import EventSchema, to_data
from app.domain.validation import FieldChecker
from app.event_store.base import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    IdempotencyRecord,
    NewEvent,
)
from app.service.repository import Repository

log = logging.getLogger(__name__)
Reserve = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who asked, under which request, and the client's retry key."""

    correlation_id: str
    actor: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    entity: str
    entity_id: int
    position: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What a command decided: events per stream, every stream's expected version, its subject."""

    events: list[tuple[str, e.DomainEvent]]
    expected: dict[str, int]
    entity: str
    entity_id: int
    guarded_stream: str | None = None
    """The stream whose client-stated expected version turns a conflict into ConflictError."""


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"


class CommandHandlers:
    """One public coroutine per command; each returns a CommandResult or raises a DomainError."""

    def __init__(
        self,
        store: EventStore,
        schema: EventSchema,
        today: Callable[[], dt.date] = dt.date.today,
        max_retries: int = 10,
        snapshot_every: int = 100,
    ) -> None:
        self._store = store
        self._schema = schema
        self._repo = Repository(store, snapshot_every)
        self._today = today
        self._max_retries = max_retries
        self._reserved: dict[str, set[int]] = {}

    async def create_location(self, cmd: c.CreateLocation, ctx: CommandContext) -> CommandResult:
        model.validate_create_location(cmd)

        async def decide(reserve: Reserve) -> Decision:
            location_id = cmd.location_id or await reserve("location")
            existing = await self._repo.location(location_id)
            if cmd.location_id is None:
                _raise_if_taken(e.location_stream(location_id), existing)
            new = model.create_location(cmd, location_id, existing)
            stream = e.location_stream(location_id)
            return Decision([(stream, ev) for ev in new], {stream: 0}, "location", location_id)

        return await self._execute(cmd, ctx, decide)

    async def create_employee(self, cmd: c.CreateEmployee, ctx: CommandContext) -> CommandResult:
        model.validate_create_employee(cmd, self._today())

        async def decide(reserve: Reserve) -> Decision:
            employee_id = cmd.employee_id or await reserve("employee")
            existing = await self._repo.employee(employee_id)
            if cmd.employee_id is None:
                _raise_if_taken(e.employee_stream(employee_id), existing)
            location = await self._repo.location(cmd.location_id)
            new = model.create_employee(cmd, employee_id, existing, location, self._today())
            stream = e.employee_stream(employee_id)
            expected = {stream: 0, e.location_stream(cmd.location_id): _version(location)}
            return Decision([(stream, ev) for ev in new], expected, "employee", employee_id)

        return await self._execute(cmd, ctx, decide)

    async def assign_employee_to_location(
        self, cmd: c.AssignEmployeeToLocation, ctx: CommandContext
    ) -> CommandResult:
        model.validate_assign(cmd)

        async def decide(_reserve: Reserve) -> Decision:
            employee = await self._repo.employee(cmd.employee_id)
            location = await self._repo.location(cmd.location_id)
            new = model.assign_employee(cmd, employee, location)
            return await self._employee_decision(cmd.employee_id, employee, new, location)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def change_employee_job_title(
        self, cmd: c.ChangeEmployeeJobTitle, ctx: CommandContext
    ) -> CommandResult:
        async def decide(_reserve: Reserve) -> Decision:
            employee = await self._repo.employee(cmd.employee_id)
            new = model.change_job_title(cmd, employee)
            return await self._employee_decision(cmd.employee_id, employee, new)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def terminate_employee(
        self, cmd: c.TerminateEmployee, ctx: CommandContext
    ) -> CommandResult:
        async def decide(_reserve: Reserve) -> Decision:
            employee = await self._repo.employee(cmd.employee_id)
            new = model.terminate_employee(cmd, employee)
            return await self._employee_decision(cmd.employee_id, employee, new)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def _employee_decision(
        self,
        employee_id: int,
        employee: model.Employee | None,
        new: list[e.DomainEvent],
        target: model.Location | None = None,
    ) -> Decision:
        """Events on the employee stream, guarded by every location stream the change relies on."""
        stream = e.employee_stream(employee_id)
        expected = {stream: _version(employee)}
        if employee is not None and employee.location_id is not None:
            current = await self._repo.location(employee.location_id)
            expected[e.location_stream(employee.location_id)] = _version(current)
        if target is not None:
            expected[e.location_stream(target.location_id)] = target.version
        return Decision(
            [(stream, ev) for ev in new], expected, "employee", employee_id, guarded_stream=stream
        )

    async def _execute(
        self,
        cmd: c.Command,
        ctx: CommandContext,
        decide: Callable[[Reserve], Awaitable[Decision]],
        client_version: int | None = None,
    ) -> CommandResult:
        idempotency = await self._idempotency(cmd, ctx)
        if idempotency is not None:
            previous = await self._store.find_command(idempotency.key)
            if previous is not None:
                return self._replay(previous, idempotency)
        causation_id = str(uuid.uuid4())
        held: list[tuple[str, int]] = []

        async def reserve(category: str) -> int:
            return await self._reserve_id(category, held)

        try:
            return await self._attempt(cmd, ctx, decide, reserve, client_version, idempotency,
                                       causation_id)
        finally:
            for category, number in held:
                self._reserved[category].discard(number)

    async def _attempt(
        self,
        cmd: c.Command,
        ctx: CommandContext,
        decide: Callable[[Reserve], Awaitable[Decision]],
        reserve: Reserve,
        client_version: int | None,
        idempotency: IdempotencyRecord | None,
        causation_id: str,
    ) -> CommandResult:
        for attempt in range(self._max_retries + 1):
            decision: Decision | None = None
            try:
                decision = await decide(reserve)
                appended = await self._store.append(
                    [NewEvent(s, type(ev).__name__, to_data(ev),
                              self._schema.version_of(type(ev).__name__))
                     for s, ev in decision.events],
                    decision.expected,
                    _metadata(ctx, causation_id),
                    _with_result(idempotency, decision),
                )
            except DuplicateCommand as dup:
                assert idempotency is not None
                return self._replay(dup.record, idempotency)
            except ConcurrencyError as conflict:
                guarded = decision.guarded_stream if decision is not None else None
                if client_version is not None and conflict.stream_id == guarded:
                    raise Conflict(client_version, conflict.actual) from conflict
                log.info("retrying %s after conflict on %s (attempt %d)",
                         type(cmd).__name__, conflict.stream_id, attempt + 1)
                continue
            return CommandResult(decision.entity, decision.entity_id, appended.last_position)
        raise Conflict(None, None, f"Gave up after {self._max_retries} concurrent changes; retry.")

    async def _reserve_id(self, category: str, held: list[tuple[str, int]]) -> int:
        """The next free id; ids held by commands still in flight here are skipped."""
        reserved = self._reserved.setdefault(category, set())
        candidate = await self._store.max_stream_number(category) + 1
        while candidate in reserved:
            candidate += 1
        reserved.add(candidate)
        held.append((category, candidate))
        return candidate

    async def _idempotency(self, cmd: c.Command, ctx: CommandContext) -> IdempotencyRecord | None:
        if ctx.idempotency_key is None:
            return None
        check = FieldChecker()
        check.text("idempotency_key", "Idempotency Key", ctx.idempotency_key)
        check.raise_if_any()
        fingerprint = hashlib.sha256(repr(cmd).encode()).hexdigest()
        return IdempotencyRecord(ctx.idempotency_key, type(cmd).__name__, fingerprint)

    def _replay(self, previous: IdempotencyRecord, asked: IdempotencyRecord) -> CommandResult:
        if (previous.command, previous.fingerprint) != (asked.command, asked.fingerprint):
            raise IdempotencyKeyReused(
                "This idempotencyKey was already used for a different request."
            )
        result = previous.result
        return CommandResult(
            str(result["entity"]), int(result["id"]), previous.commit_position, replayed=True
        )


def _raise_if_taken(stream_id: str, existing: model.Location | model.Employee | None) -> None:
    """An id we picked ourselves was taken by another process meanwhile: pick again."""
    if existing is not None:
        raise ConcurrencyError(stream_id, 0, existing.version)


def _version(aggregate: model.Location | model.Employee | None) -> int:
    return aggregate.version if aggregate is not None else 0


def _metadata(ctx: CommandContext, causation_id: str) -> dict[str, str | None]:
    return {
        "correlation_id": ctx.correlation_id,
        "causation_id": causation_id,
        "idempotency_key": ctx.idempotency_key,
        "actor": ctx.actor,
    }


def _with_result(
    idempotency: IdempotencyRecord | None, decision: Decision
) -> IdempotencyRecord | None:
    if idempotency is None:
        return None
    return IdempotencyRecord(
        idempotency.key, idempotency.command, idempotency.fingerprint,
        {"entity": decision.entity, "id": decision.entity_id},
    )

