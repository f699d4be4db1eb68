"""`python -m app migrate` and `serve`'s refusal of an unmigrated PostgreSQL schema, run as an
operator runs them: subprocesses."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.event_store.migrations import head
from tests.harness.server import CLI_TIMEOUT_SECONDS, app_env, free_port, run_cli
from tests.integration.test_migrations import at_first_revision, empty_database


def refused(work_dir: Path, url: str | None, *args: str) -> str:
    """`python -m app <args>` (`serve` by default) on `url` (None: the default SQLite file): it
    must exit 2 with its reason as the last line on stderr, and no traceback; that line."""
    result = subprocess.run(
        [sys.executable, "-m", "app", *(args or ("serve", "--port", str(free_port())))],
        cwd=work_dir, env=app_env(work_dir, extra={"DATABASE_URL": url} if url else None),
        capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if args[:1] in ((), ("serve",), ("migrate",)):  # checked before anything starts
        assert len(lines) == 1, result.stderr
    return lines[-1]


@pytest.mark.postgres
def test_serve_refuses_postgres_until_it_is_migrated(tmp_path: Path) -> None:
    url = asyncio.run(empty_database("postgres", tmp_path))

    assert refused(tmp_path, url) == (
        "python -m app serve: the database has no event store schema yet: run "
        "`python -m app migrate` with the same DATABASE_URL first")

    migrated = run_cli(tmp_path, "migrate", env={"DATABASE_URL": url})
    assert migrated.stdout == (
        f"event store schema: upgraded from no revision to revision {head()}\n")

    asyncio.run(empty_database("postgres", tmp_path))
    asyncio.run(at_first_revision(url))  # one behind
    assert refused(tmp_path, url) == (
        f"python -m app serve: the database schema is at revision 0001, this version of the "
        f"service needs {head()}: run `python -m app migrate` with the same DATABASE_URL first")
    assert refused(tmp_path, url, "status").startswith(  # as every command opening the store
        "python -m app status: the database schema is at revision 0001")

    assert run_cli(tmp_path, "migrate", env={"DATABASE_URL": url}).stdout == (
        f"event store schema: upgraded from revision 0001 to revision {head()}\n")
    assert run_cli(tmp_path, "status", env={"DATABASE_URL": url}).stdout.startswith(
        "projected position: 0")


def test_migrate_makes_and_then_leaves_an_sqlite_file(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'new' / 'events.db'}"}
    assert run_cli(tmp_path, "migrate", env=env).stdout == (
        f"event store schema: upgraded from no revision to revision {head()}\n")
    assert run_cli(tmp_path, "migrate", env=env).stdout == (
        f"event store schema: at revision {head()} (the newest), nothing to do\n")
    assert (tmp_path / "new" / "events.db").exists()
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700  # made private, as by serve


def test_a_database_it_cannot_adopt_stops_migrate_and_serve_in_one_line(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "events.db") as conn:  # a table of someone else's
        conn.execute("CREATE TABLE snapshots (stream_id TEXT PRIMARY KEY, body TEXT)")
    expected = ": table 'snapshots' exists with columns ['body', 'stream_id'], not ['state', " \
        "'stream_id', 'version']: this database was not made by this service"

    assert refused(tmp_path, None, "migrate") == "python -m app migrate" + expected
    assert refused(tmp_path, None) == "python -m app serve" + expected
