"""The README's first request works as written: on a fresh database, and right after
`seed-demo` (which a new user runs first), with the id the first mutation returns put where the
README says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_cli import run_cli
from tests.harness.environment import PROJECT_ROOT
from tests.harness.server import running_server


def first_request() -> list[str]:
    """The GraphQL blocks of the README's "A first request", in order."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## A first request", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```graphql\n(.*?)```", section, re.DOTALL)


def run(base_url: str, query: str) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/graphql", json={"query": query}, timeout=30)
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def follow_the_readme(work_dir: Path) -> tuple[int, int, int]:
    """The three blocks against a server on `work_dir`, the location's id put where the README
    says; the location's id and the positions of both mutations."""
    create, hire, read = first_request()
    with running_server(work_dir) as server:
        created = run(server.base_url, create)["createLocation"]
        assert created["__typename"] == "LocationPayload", created
        location_id, at = created["location"]["id"], created["position"]
        hired = run(server.base_url, hire.replace("locationId: 1", f"locationId: {location_id}"))
        employee = hired["createEmployee"]
        assert employee["__typename"] == "EmployeePayload", employee
        assert employee["employee"]["locationId"] == location_id
        read = read.replace("id: 1", f"id: {location_id}").replace("atPosition: 1",
                                                                     f"atPosition: {at}")
        answer = run(server.base_url, read)
        assert answer["now"]["employeeCount"] == 1
        assert answer["now"]["employees"][0]["firstName"] == "Ana"
        assert answer["before"] == {"city": "Springfield", "employeeCount": 0}
        return location_id, at, employee["position"]


def test_the_first_request_works_on_a_fresh_database_as_written(tmp_path: Path) -> None:
    assert follow_the_readme(tmp_path) == (1, 1, 3)  # the ids and positions the README names


def test_the_first_request_works_right_after_seed_demo(tmp_path: Path) -> None:
    run_cli(tmp_path, "seed-demo", "--locations", "3", "--employees", "4")
    location_id, at, hired_at = follow_the_readme(tmp_path)
    assert location_id == 4  # the next free id after the demo's locations
    assert hired_at == at + 2
