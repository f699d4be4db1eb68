"""Command handlers: load aggregates, let the domain decide, append atomically, retry conflicts."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from app.domain import commands as c
from app.domain import events as e
from app.domain import model
from app.domain.errors import Conflict, DomainError
from app.domain.schema import ERASURE, EventSchema, to_data
from app.event_store.base import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    IdempotencyRecord,
    NewEvent,
)
from app.service.idempotency import (
    CommandResult,
    IdempotencyKeyReused,
    idempotency_record,
    replay,
    with_result,
)
from app.service.repository import Aggregate, Repository

__all__ = ["CommandContext", "CommandHandlers", "CommandResult", "IdempotencyKeyReused"]
log = logging.getLogger(__name__)
RETRY_JITTER_SECONDS = 0.001  # times 2**attempt: at most ~1 s before the 10th retry
Reserve = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who asked, under which request, and the client's retry key."""

    correlation_id: str
    actor: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What a command decided: events per stream, every stream's expected version, its subject."""

    events: list[tuple[str, e.DomainEvent]]
    expected: dict[str, int]
    entity: str
    entity_id: int
    guarded_stream: str | None = None
    """The stream whose client-stated expected version turns a conflict into ConflictError."""
    done_at: int = 0
    """With no events: the position at which what the command asks was already done."""


@dataclass
class Loads:
    """The aggregates one decision reads: what this process remembers unless `fresh`.

    A remembered aggregate may be stale (another process wrote since): the append's expected
    versions catch that, and `used_cache` tells the caller to re-check an error on fresh state.
    A stream the command means to create is assumed absent unless remembered: its expected
    version 0 makes the append fail if it exists after all.
    """

    repo: Repository
    fresh: bool
    used_cache: bool = False
    states: dict[str, Aggregate | None] = field(default_factory=dict)

    async def location(self, location_id: int, new: bool = False) -> model.Location | None:
        stream = e.location_stream(location_id)
        if self._remembered(stream, new):
            return cast(model.Location | None, self.states[stream])
        state = await self.repo.location(location_id)
        self.states[stream] = state
        return state

    async def employee(self, employee_id: int, new: bool = False) -> model.Employee | None:
        stream = e.employee_stream(employee_id)
        if self._remembered(stream, new):
            return cast(model.Employee | None, self.states[stream])
        state = await self.repo.employee(employee_id)
        self.states[stream] = state
        return state

    def _remembered(self, stream: str, new: bool) -> bool:
        if self.fresh:
            return False
        state = self.repo.cached(stream)
        if state is None and not new:
            return False
        self.states[stream] = state
        self.used_cache = True
        return True


Decide = Callable[[Reserve, Loads], Awaitable[Decision]]


class CommandHandlers:
    """One public coroutine per command; each returns a CommandResult or raises a DomainError."""

    def __init__(
        self,
        store: EventStore,
        schema: EventSchema,
        today: Callable[[], dt.date] = dt.date.today,
        max_retries: int = 10,
        snapshot_every: int = 100,
        cache_size: int = 10_000,
    ) -> None:
        self._store = store
        self._schema = schema
        self._repo = Repository(store, snapshot_every, cache_size)
        self._today = today
        self._max_retries = max_retries
        self._reserved: dict[str, set[int]] = {}

    @property
    def repository(self) -> Repository:
        """Where aggregates are loaded (its counters tell how: snapshots, events replayed)."""
        return self._repo

    async def create_location(self, cmd: c.CreateLocation, ctx: CommandContext) -> CommandResult:
        model.validate_create_location(cmd)

        async def decide(reserve: Reserve, loads: Loads) -> Decision:
            location_id = cmd.location_id or await reserve("location")
            existing = await loads.location(location_id, new=True)
            if cmd.location_id is None:
                _raise_if_taken(e.location_stream(location_id), existing)
            new = model.create_location(cmd, location_id, existing)
            stream = e.location_stream(location_id)
            return Decision([(stream, ev) for ev in new], {stream: 0}, "location", location_id)

        return await self._execute(cmd, ctx, decide)

    async def create_employee(self, cmd: c.CreateEmployee, ctx: CommandContext) -> CommandResult:
        model.validate_create_employee(cmd, self._today())

        async def decide(reserve: Reserve, loads: Loads) -> Decision:
            employee_id = cmd.employee_id or await reserve("employee")
            existing = await loads.employee(employee_id, new=True)
            if cmd.employee_id is None:
                _raise_if_taken(e.employee_stream(employee_id), existing)
            location = await loads.location(cmd.location_id)
            new = model.create_employee(cmd, employee_id, existing, location, self._today())
            stream = e.employee_stream(employee_id)
            expected = {stream: 0, e.location_stream(cmd.location_id): _version(location)}
            return Decision([(stream, ev) for ev in new], expected, "employee", employee_id)

        return await self._execute(cmd, ctx, decide)

    async def assign_employee_to_location(
        self, cmd: c.AssignEmployeeToLocation, ctx: CommandContext
    ) -> CommandResult:
        model.validate_assign(cmd)

        async def decide(_reserve: Reserve, loads: Loads) -> Decision:
            employee = await loads.employee(cmd.employee_id)
            location = await loads.location(cmd.location_id)
            new = model.assign_employee(cmd, employee, location)
            return await self._employee_decision(cmd.employee_id, employee, new, loads, location)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def change_employee_job_title(
        self, cmd: c.ChangeEmployeeJobTitle, ctx: CommandContext
    ) -> CommandResult:
        async def decide(_reserve: Reserve, loads: Loads) -> Decision:
            employee = await loads.employee(cmd.employee_id)
            new = model.change_job_title(cmd, employee)
            return await self._employee_decision(cmd.employee_id, employee, new, loads)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def terminate_employee(
        self, cmd: c.TerminateEmployee, ctx: CommandContext
    ) -> CommandResult:
        async def decide(_reserve: Reserve, loads: Loads) -> Decision:
            employee = await loads.employee(cmd.employee_id)
            new = model.terminate_employee(cmd, employee)
            return await self._employee_decision(cmd.employee_id, employee, new, loads)

        return await self._execute(cmd, ctx, decide, cmd.expected_version)

    async def forget_employee(self, cmd: c.ForgetEmployee, ctx: CommandContext) -> CommandResult:
        """Erase an employee's personal data; a second erasure writes nothing and answers with
        the position of the first."""

        async def decide(_reserve: Reserve, loads: Loads) -> Decision:
            employee = await loads.employee(cmd.employee_id)
            new = model.forget_employee(cmd, employee)
            stream = e.employee_stream(cmd.employee_id)
            if not new:
                return Decision([], {}, "employee", cmd.employee_id,
                                done_at=await self._erased_at(stream))
            return Decision([(stream, ev) for ev in new], {stream: _version(employee)},
                            "employee", cmd.employee_id)

        return await self._execute(cmd, ctx, decide)

    async def _erased_at(self, stream_id: str) -> int:
        """The position of the stream's (first) erasure."""
        for recorded in await self._store.read_stream(stream_id):
            if recorded.type == ERASURE:
                return recorded.position
        raise LookupError(f"{stream_id} is erased but holds no erasure event")

    async def _employee_decision(
        self,
        employee_id: int,
        employee: model.Employee | None,
        new: list[e.DomainEvent],
        loads: Loads,
        target: model.Location | None = None,
    ) -> Decision:
        """Events on the employee stream, guarded by every location stream the change relies on."""
        stream = e.employee_stream(employee_id)
        expected = {stream: _version(employee)}
        if employee is not None and employee.location_id is not None:
            current = await loads.location(employee.location_id)
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
        decide: Decide,
        client_version: int | None = None,
    ) -> CommandResult:
        idempotency = idempotency_record(cmd, ctx.idempotency_key)
        if idempotency is not None:
            previous = await self._store.find_command(idempotency.key)
            if previous is not None:
                return replay(previous, idempotency)
        causation_id = str(uuid.UUID(int=random.getrandbits(128), version=4))  # no syscall
        held: list[tuple[str, int]] = []

        async def reserve(category: str) -> int:
            return await self._reserve_id(category, held)

        try:
            return await self._attempt(cmd, ctx, decide, reserve, client_version, idempotency,
                                       causation_id)
        except DomainError:
            # A refusal may be the twin's own write: a request with the same key that committed
            # while this one decided. Look the key up again (the store is all replicas share,
            # and it records the key with the twin's events); without a record, it stands.
            if idempotency is None:
                raise
            previous = await self._store.find_command(idempotency.key)
            if previous is None:
                raise
            return replay(previous, idempotency)
        finally:
            for category, number in held:
                self._reserved[category].discard(number)

    async def _attempt(
        self,
        cmd: c.Command,
        ctx: CommandContext,
        decide: Decide,
        reserve: Reserve,
        client_version: int | None,
        idempotency: IdempotencyRecord | None,
        causation_id: str,
    ) -> CommandResult:
        attempt, fresh = 0, False
        while attempt <= self._max_retries:
            loads = Loads(self._repo, fresh)
            decision: Decision | None = None
            try:
                decision = await decide(reserve, loads)
                if not decision.events:
                    return CommandResult(decision.entity, decision.entity_id, decision.done_at,
                                         replayed=True)
                appended = await self._store.append(
                    [NewEvent(s, type(ev).__name__, to_data(ev),
                              self._schema.version_of(type(ev).__name__))
                     for s, ev in decision.events],
                    decision.expected,
                    _metadata(ctx, causation_id),
                    with_result(idempotency, decision.entity, decision.entity_id),
                )
            except DuplicateCommand as dup:
                assert idempotency is not None
                return replay(dup.record, idempotency)
            except ConcurrencyError as conflict:
                self._repo.forget(decision.expected if decision is not None else loads.states)
                fresh = True
                guarded = decision.guarded_stream if decision is not None else None
                if client_version is not None and conflict.stream_id == guarded:
                    raise Conflict(client_version, conflict.actual) from conflict
                log.info("retrying %s after conflict on %s (attempt %d)",
                         type(cmd).__name__, conflict.stream_id, attempt + 1)
                attempt += 1
                if attempt > 1:  # rivals (often in other processes) retry in lockstep otherwise
                    await asyncio.sleep(random.uniform(0, RETRY_JITTER_SECONDS * 2 ** attempt))
                continue
            except DomainError:
                if not loads.used_cache:
                    raise
                self._repo.forget(loads.states)  # decided on remembered state: check it afresh
                fresh = True
                continue
            for stream, written in _by_stream(decision.events).items():
                await self._repo.advance(stream, loads.states.get(stream), written)
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


def _by_stream(events: list[tuple[str, e.DomainEvent]]) -> dict[str, list[e.DomainEvent]]:
    grouped: dict[str, list[e.DomainEvent]] = {}
    for stream, event in events:
        grouped.setdefault(stream, []).append(event)
    return grouped


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
