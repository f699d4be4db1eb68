"""Erasure of personal data end to end (DESIGN §7.1, the issue's Must show): the served process,
its embedded Valkey, and the files it leaves behind.

Someone hired with unique marker values is moved and retitled, another marked employee is
terminated, both are forgotten: afterwards no answer of any kind carries the markers (now, at
every past position, in lists, nested under locations, in the `events` query and its replayed
subscription), a change subscriber was told (UPDATED), and once the server has stopped no byte of
any file under its directory (SQLite database and WAL, the Valkey append-only files, its own
DEBUG log) holds them. A control employee keeps their data. On SQLite and on PostgreSQL; there,
after the documented compaction (`python -m app privacy compact`) the scan covers PostgreSQL's own
data directory too (the tests run as a user that can read it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_URL, fresh_postgres, require
from tests.harness.server import RunningServer, run_cli, running_server
from tests.harness.ws_support import EVENTS_FEED, Api, open_api, subscribe

PERSON = "id firstName lastName dateOfBirth personalDataErased jobTitle locationId"
FORGET = """
mutation Forget($input: ForgetEmployeeInput!) {
  forgetEmployee(input: $input) {
    __typename ... on Error { message code }
    ... on ForgetEmployeePayload { employeeId position }
  }
}"""
HIRE = f"""
mutation Hire($input: CreateEmployeeInput!) {{
  createEmployee(input: $input) {{
    __typename ... on Error {{ message code }}
    ... on EmployeePayload {{ position employee {{ {PERSON} }} }}
  }}
}}"""
EVERYTHING_AT = f"""
query At($at: Int, $a: Int!, $b: Int!) {{
  a: employee(id: $a, atPosition: $at) {{ {PERSON} }}
  b: employee(id: $b, atPosition: $at) {{ {PERSON} }}
  employees(atPosition: $at, first: 100) {{ edges {{ node {{ {PERSON} }} }} }}
  locations(atPosition: $at) {{ id employees {{ {PERSON} }} }}
}}"""
CHANGED = f"""
subscription Changed($id: Int) {{
  employeeChanged(id: $id) {{ position kind employeeId employee {{ {PERSON} }} }}
}}"""


class People:
    """Unique markers: names and a birth date no other test uses."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.a = {"firstName": f"Mkfa{tag}", "lastName": f"Mkla{tag}", "dateOfBirth": "1931-07-13"}
        self.b = {"firstName": f"Mkfb{tag}", "lastName": f"Mklb{tag}", "dateOfBirth": "1932-11-29"}
        self.control = {"firstName": f"Keep{tag}", "lastName": f"Kept{tag}",
                        "dateOfBirth": "1990-05-17"}

    def markers(self) -> list[str]:
        return [*self.a.values(), *self.b.values()]


def absent(markers: list[str], text: str, where: str) -> None:
    found = [m for m in markers if m in text]
    assert not found, f"{found} still in {where}: …{text[text.find(found[0]) - 200:][:400]}…"


async def hire(api: Api, employee_id: int, person: dict[str, str], location_id: int) -> None:
    result = (await api.run(HIRE, input={"id": employee_id, "jobTitle": "Cook",
                                         "locationId": location_id, **person}))["createEmployee"]
    assert result["employee"]["firstName"] == person["firstName"], result


async def forget(api: Api, employee_id: int, key: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = (
        await api.run(FORGET, input={"employeeId": employee_id, "idempotencyKey": key})
    )["forgetEmployee"]
    return answer


def scan(directory: Path, markers: list[str]) -> list[str]:
    """Every file under `directory` holding any marker's bytes (and which marker)."""
    hits = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a running server's temporary file, gone meanwhile
            continue
        hits += [f"{path.relative_to(directory)}: {m}" for m in markers if m.encode() in data]
    return hits


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """The server's DATABASE_URL setting (none: SQLite under its directory)."""
    if request.param == "sqlite":
        yield {}
        return
    url = require(POSTGRES_URL, "TEST_POSTGRES_URL")
    await fresh_postgres(url)
    yield {"DATABASE_URL": url}


async def test_forgotten_employees_are_gone_from_every_answer_and_every_file(
    tmp_path: Path, database: dict[str, str]
) -> None:
    people = People()
    markers = people.markers()
    work = tmp_path / "served"
    env = {**database, "LOG_LEVEL": "DEBUG"}  # no personal data at any level
    with running_server(work, extra_env=env) as server:
        async with open_api(server.base_url) as api:
            await scenario(server, api, people, markers)
        log = server.log_path.read_text()
    assert '"level": "ERROR"' not in log and "Exception in ASGI application" not in log
    assert '"level": "DEBUG"' in log  # the scan below covers the DEBUG lines
    hits = scan(work, markers)
    assert not hits, hits
    if "DATABASE_URL" in database:  # the documented compaction, then PostgreSQL's own files
        compacted = run_cli(work, "privacy", "compact", env=database).stdout
        assert "VACUUM FULL events" in compacted
        data_dir = await postgres_data_directory(database["DATABASE_URL"])
        assert data_dir.is_dir(), f"cannot read PostgreSQL's data directory {data_dir}"
        hits = scan(data_dir, markers)
        assert not hits, hits


async def postgres_data_directory(url: str) -> Path:
    """The server's data directory, after a CHECKPOINT (its files as they are at rest)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("CHECKPOINT")
            return Path(str((await conn.exec_driver_sql("SHOW data_directory")).scalar()))
    finally:
        await engine.dispose()


async def scenario(server: RunningServer, api: Api, people: People, markers: list[str]) -> None:
    a, b, control = 1, 2, 3
    await api.create_location(1)
    await api.create_location(2)
    await hire(api, a, people.a, 1)
    await hire(api, b, people.b, 1)
    await hire(api, control, people.control, 1)
    await api.assign(a, 2)
    await api.change_title(a, "Chef")
    await api.terminate(b)
    before = await api.run(EVERYTHING_AT, at=None, a=a, b=b)
    assert before["a"]["firstName"] == people.a["firstName"]  # the markers were there

    async with subscribe(server.ws_url, CHANGED, "employeeChanged", id=a) as changes:
        await api.wait_subscribers(1)
        forgot_a = await forget(api, a, key="forget-a")
        forgot_b = await forget(api, b)
        await changes.wait_position(forgot_a["position"])
    assert forgot_a["__typename"] == "ForgetEmployeePayload", forgot_a
    assert forgot_b == {"__typename": "ForgetEmployeePayload", "employeeId": b,
                        "position": forgot_a["position"] + 1}
    update = changes.items[-1]
    assert (update["kind"], update["employee"]["personalDataErased"],
            update["employee"]["firstName"], update["employee"]["jobTitle"]) == (
        "UPDATED", True, None, "Chef")
    absent(markers, repr(changes.items[1:]), "the change feed after the erasure")

    head = await api.head()
    assert await forget(api, a) == forgot_a  # idempotent: the first erasure, nothing written
    assert (await forget(api, 99))["code"] == "NOT_FOUND"
    assert await api.head() == head

    answers = []
    for at in [None, *range(1, head + 1)]:
        answers.append(await api.run(EVERYTHING_AT, at=at, a=a, b=b))
    absent(markers, repr(answers), "the answers at every position")
    now = answers[0]
    assert now["a"] == {"id": a, "firstName": None, "lastName": None, "dateOfBirth": None,
                        "personalDataErased": True, "jobTitle": "Chef", "locationId": 2}
    assert now["b"] is None  # terminated
    hired_b = next(x["b"] for x in answers[1:] if x["b"] is not None)
    assert (hired_b["firstName"], hired_b["personalDataErased"]) == (None, True)
    kept = next(n["node"] for n in now["employees"]["edges"] if n["node"]["id"] == control)
    assert {k: kept[k] for k in people.control} == people.control
    assert kept["personalDataErased"] is False

    stored = await api.events_after(0)
    absent(markers, repr(stored), "the events query")
    assert [e["type"] for e in stored if e["streamId"] == f"employee-{a}"][-1] == (
        "EmployeePersonalDataErased")
    async with subscribe(server.ws_url, EVENTS_FEED, "events", after=0) as replay:
        await replay.wait_position(head)
    assert len(replay.items) == head
    absent(markers, repr(replay.items), "the replayed events subscription")
