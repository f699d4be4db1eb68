"""Builds large, valid event histories fast by bulk-inserting rows the store would have written.

The events are the domain's own (encoded by app.domain.schema), with the versions, positions,
commit positions and timestamps the event store assigns; only the command handlers are skipped,
so a million-event history takes seconds instead of an hour.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.domain import events as e
from app.domain.schema import default_schema, to_data
from app.event_store.keys import Sealer

SCHEMA = default_schema()


def restaurant_history(
    total: int, locations: int = 20, per_location: int = 50
) -> Iterator[list[tuple[str, e.DomainEvent]]]:
    """Commits of (stream, event): locations, their staff, then title changes and swaps."""
    for n in range(1, locations + 1):
        yield [(e.location_stream(n), e.LocationCreated(n, f"{n} Main", "Town", "ST", f"{n:05d}"))]
    staff = locations * per_location
    where = {}
    for n in range(1, staff + 1):
        where[n] = 1 + (n - 1) % locations
        yield [
            (e.employee_stream(n),
             e.EmployeeCreated(n, f"First{n}", "Last", dt.date(1990, 1, 1), "Cook")),
            (e.employee_stream(n), e.EmployeeAssignedToLocation(n, where[n])),
        ]
    produced = locations + 2 * staff
    step = 0
    while produced < total:
        step += 1
        a = 1 + (step * 7919) % staff
        if step % 4:
            yield [(e.employee_stream(a), e.EmployeeJobTitleChanged(a, f"Title {step}"))]
            produced += 1
            continue
        b = 1 + (a + 1) % staff  # swap two employees of different locations: sizes stay put
        if where[a] == where[b]:
            continue
        la, lb = where[a], where[b]
        yield [
            (e.employee_stream(a), e.EmployeeRemovedFromLocation(a, la)),
            (e.employee_stream(a), e.EmployeeAssignedToLocation(a, lb)),
        ]
        yield [
            (e.employee_stream(b), e.EmployeeRemovedFromLocation(b, lb)),
            (e.employee_stream(b), e.EmployeeAssignedToLocation(b, la)),
        ]
        where[a], where[b] = lb, la
        produced += 4


def write_sqlite(path: Path, total: int) -> int:
    """Create the store's tables (via the app) and fill them; the number of events written.
    Personal fields are sealed with a key per employee, as the store seals them."""
    rows: list[dict[str, Any]] = []
    versions: dict[str, int] = {}
    position = 0
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for commit in restaurant_history(total):
        commit_position = position + len(commit)
        moment = start + dt.timedelta(milliseconds=commit_position)
        for stream, event in commit:
            position += 1
            versions[stream] = versions.get(stream, 0) + 1
            name = type(event).__name__
            rows.append({
                "position": position, "stream_id": stream, "version": versions[stream],
                "type": name, "schema_version": SCHEMA.version_of(name), "data": to_data(event),
                "recorded_at": moment.strftime("%Y-%m-%d %H:%M:%S.%f"),
                "commit_position": commit_position,
            })
    sealed, keys = Sealer().seal(rows, {})
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (r["position"], r["stream_id"], r["version"], r["type"], r["schema_version"],
             json.dumps(r["data"]), '{"correlation_id": "bench"}', r["recorded_at"],
             r["commit_position"])
            for r in sealed
        ])
        db.executemany("INSERT INTO personal_data_keys VALUES (?, ?)", keys)
        db.executemany(
            "INSERT INTO streams VALUES (?, ?, ?, ?)",
            [(s, s.rsplit("-", 1)[0], int(s.rsplit("-", 1)[1]), v) for s, v in versions.items()],
        )
    db.close()
    return position
