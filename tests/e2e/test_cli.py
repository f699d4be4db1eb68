"""The command line, run as an operator runs it: `python -m app …` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import graphql
import pytest

from tests.conftest import POSTGRES_URL, fresh_postgres, require
from tests.harness.environment import app_environment
from tests.harness.server import run_cli

TIMEOUT_SECONDS = 120
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_export_schema_prints_the_contract_sdl_and_touches_nothing(tmp_path: Path) -> None:
    sdl = run_cli(tmp_path, "export-schema").stdout

    for line in (
        "type Query {",
        "type Mutation {",
        "type Subscription {",
        "interface Error {",
        "  projectionStatus: ProjectionStatus!",
        "union CreateLocationResult = LocationPayload | ValidationError | AlreadyExistsError",
        "union CreateEmployeeResult = EmployeePayload | ValidationError | AlreadyExistsError | "
        "NotFoundError",
        "union AssignEmployeeToLocationResult = EmployeePayload | ValidationError | "
        "NotFoundError | RuleViolationError | ConflictError",
        "union ChangeEmployeeJobTitleResult = EmployeePayload | ValidationError | NotFoundError "
        "| ConflictError",
        "union TerminateEmployeeResult = TerminatePayload | NotFoundError | ConflictError",
    ):
        assert line in sdl.splitlines(), f"missing from the SDL: {line!r}"

    # It is valid SDL, and the types of the contract's fields are exactly as designed.
    schema = graphql.build_schema(sdl)
    query = schema.query_type
    assert query is not None
    shapes = {name: str(field.type) for name, field in query.fields.items()}
    assert shapes == {
        "location": "Location", "locations": "[Location!]!", "employee": "Employee",
        "employees": "EmployeeConnection!", "events": "[Event!]!",
        "projectionStatus": "ProjectionStatus!",
    }
    mutation = schema.mutation_type
    assert mutation is not None
    commands = {
        name: (str(f.args["input"].type), str(f.type)) for name, f in mutation.fields.items()
    }
    assert commands == {
        "createLocation": ("CreateLocationInput!", "CreateLocationResult!"),
        "createEmployee": ("CreateEmployeeInput!", "CreateEmployeeResult!"),
        "assignEmployeeToLocation": (
            "AssignEmployeeToLocationInput!", "AssignEmployeeToLocationResult!"
        ),
        "changeEmployeeJobTitle": ("ChangeEmployeeJobTitleInput!", "ChangeEmployeeJobTitleResult!"),
        "terminateEmployee": ("TerminateEmployeeInput!", "TerminateEmployeeResult!"),
        "forgetEmployee": ("ForgetEmployeeInput!", "ForgetEmployeeResult!"),
    }
    location = schema.get_type("Location")
    assert isinstance(location, graphql.GraphQLObjectType)
    assert {name: str(f.type) for name, f in location.fields.items()} == {
        "id": "Int!", "streetAddress": "String!", "city": "String!", "state": "String!",
        "postalCode": "String!", "employees": "[Employee!]!", "employeeCount": "Int!",
        "version": "Int!", "updatedAt": "DateTime!",
    }
    errors = schema.get_type("ConflictError")
    assert isinstance(errors, graphql.GraphQLObjectType)
    assert [i.name for i in errors.interfaces] == ["Error"]
    assert {name: str(f.type) for name, f in errors.fields.items()} == {
        "message": "String!", "code": "String!", "expectedVersion": "Int", "actualVersion": "Int",
    }

    assert list(tmp_path.iterdir()) == [], "export-schema must not create a database or var/"


def test_seed_demo_then_status_reports_the_head_and_no_lag(tmp_path: Path) -> None:
    seeded = run_cli(tmp_path, "seed-demo", "--locations", "3", "--employees", "10")
    assert "13/13" in seeded.stderr  # progress: 3 locations + 10 employees
    assert "skipped" not in seeded.stderr
    assert seeded.stdout.splitlines()[:3] == [  # what was made, in the API's terms
        "created 3 locations (ids 1-3) and 10 employees (ids 1-10)",
        "their events are at positions 1-23 of the event log (try atPosition)",
        "the read model shows them",
    ]

    status = run_cli(tmp_path, "status")
    # 3 LocationCreated + 10 * (EmployeeCreated + EmployeeAssignedToLocation) = 23 events.
    # No projector runs after seed-demo exits: no leader; the first generation was built live.
    assert status.stdout.splitlines() == [
        "projected position: 23",
        "event store head:   23",
        "lag:                0",
        "generation:         1",
        "projector leader:   none",
        "rebuilding:         no",
    ]
    assert not (tmp_path / "var" / "valkey" / "server.json").exists(), (
        "a CLI command left its embedded Valkey running"
    )


def test_rebuild_builds_a_new_generation_with_progress_switches_and_deletes_the_old(
    tmp_path: Path,
) -> None:
    run_cli(tmp_path, "seed-demo", "--locations", "3", "--employees", "10")
    before = run_cli(tmp_path, "status").stdout

    rebuilt = run_cli(tmp_path, "rebuild", env={"REBUILD_GRACE_SECONDS": "0.1"})

    # progress with a rate and an ETA, the switch, and the retired generation deleted
    assert "23/23" in rebuilt.stderr
    assert "events/s" in rebuilt.stderr and "ETA" in rebuilt.stderr
    assert "switched to generation 2" in rebuilt.stderr
    assert "deleting generation(s) 1 in 0.1 s" in rebuilt.stderr
    after = run_cli(tmp_path, "status").stdout
    assert "generation:         1" in before
    assert after.splitlines()[:4] == [
        "projected position: 23",
        "event store head:   23",
        "lag:                0",
        "generation:         2",
    ]


def test_the_installed_console_script_is_the_cli(tmp_path: Path) -> None:
    """What `pipx install .` does: the project installed into a virtual environment of its own
    (seeing this interpreter's packages, so nothing is downloaded but the build backend) from a
    copy of its sources, then its `restaurant-cqrs` command run from that environment's bin/,
    with no PYTHONPATH: the code that answers is the installed copy."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    shutil.copytree(PROJECT_ROOT / "app", source / "app",
                    ignore=shutil.ignore_patterns("__pycache__"))
    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    installed = subprocess.run(
        [str(environment / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", str(source)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    script = shutil.which("restaurant-cqrs", path=str(environment / "bin"))
    assert script is not None, "the install put no restaurant-cqrs command in bin/"
    work = tmp_path / "work"
    work.mkdir()
    exported = subprocess.run(
        [script, "export-schema"], cwd=work, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_SECONDS, check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == (PROJECT_ROOT / "schema.graphql").read_text()
    usage = subprocess.run(
        [script, "--help"], cwd=work, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_SECONDS, check=False,
    )
    assert usage.stdout.startswith("usage: restaurant-cqrs "), usage.stdout
    assert list(work.iterdir()) == [], "export-schema must not create a database or var/"


def run_on_terminal(work_dir: Path, settings: dict[str, str], terminal: bool) -> str:
    """The log `python -m app status` writes, to a pseudo-terminal or to a pipe; settings are
    exactly `settings` (no LOG_JSON unless given)."""
    env = app_environment(work_dir, {
        "VAR_DIR": str(work_dir / "var"),
        "DATABASE_URL": f"sqlite+aiosqlite:///{work_dir / 'events.db'}", **settings,
    })
    command = [sys.executable, "-m", "app", "status"]
    if not terminal:
        done = subprocess.run(command, cwd=work_dir, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS, check=True)
        return done.stderr
    leader, follower = os.openpty()
    process = subprocess.Popen(command, cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    try:
        while chunk := os.read(leader, 65536):
            output += chunk
    except OSError:  # EIO: the process closed the terminal
        pass
    finally:
        os.close(leader)
    assert process.wait(timeout=TIMEOUT_SECONDS) == 0, output
    return output.decode()


def is_json_log(text: str) -> bool:
    """Whether the line announcing the embedded Valkey is a JSON object (else a console line)."""
    [line] = [line for line in text.splitlines() if "started embedded Valkey" in line]
    if line.startswith("{"):
        return json.loads(line)["level"] == "INFO"
    assert " INFO " in line and "app.embedded_redis: " in line, line
    return False


def test_log_format_is_readable_on_a_terminal_and_json_elsewhere(tmp_path: Path) -> None:
    assert not is_json_log(run_on_terminal(tmp_path, {}, terminal=True))
    assert is_json_log(run_on_terminal(tmp_path, {}, terminal=False))
    assert is_json_log(run_on_terminal(tmp_path, {"LOG_FORMAT": "json"}, terminal=True))
    assert not is_json_log(run_on_terminal(tmp_path, {"LOG_FORMAT": "console"}, terminal=False))
    # LOG_JSON, the older switch, still decides when LOG_FORMAT is left at auto.
    assert is_json_log(run_on_terminal(tmp_path, {"LOG_JSON": "true"}, terminal=True))
    assert not is_json_log(run_on_terminal(tmp_path, {"LOG_JSON": "false"}, terminal=False))
    assert is_json_log(run_on_terminal(
        tmp_path, {"LOG_JSON": "false", "LOG_FORMAT": "json"}, terminal=False))


@pytest.mark.parametrize("store", [
    "sqlite", "sqlite-aiosqlite", pytest.param("postgres", marks=pytest.mark.postgres),
])
def test_privacy_compact_vacuums_the_store_and_rewrites_the_append_only_file(
    tmp_path: Path, store: str
) -> None:
    env = {"SQLITE_DIRECT": "false"} if store == "sqlite-aiosqlite" else {}
    if store == "postgres":
        url = require(POSTGRES_URL, "TEST_POSTGRES_URL")
        asyncio.run(fresh_postgres(url))
        env["DATABASE_URL"] = url
    run_cli(tmp_path, "seed-demo", "--locations", "1", "--employees", "2", env=env)

    compacted = run_cli(tmp_path, "privacy", "compact", env=env).stdout.splitlines()

    expected = (
        ["event store: VACUUM FULL personal_data_keys", "event store: VACUUM FULL events",
         "event store: VACUUM FULL snapshots"] if store == "postgres"
        else ["event store: VACUUM", "event store: PRAGMA wal_checkpoint(TRUNCATE)"]
    )
    assert compacted == [*expected, "redis: BGREWRITEAOF (finished)"]
    assert run_cli(tmp_path, "status", env=env).stdout.startswith("projected position: 5")
