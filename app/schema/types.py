"""GraphQL object types, built from read-model documents."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc
from app.schema.context import Context


@strawberry.type
class Location:
    id: int
    street_address: str
    city: str
    state: str
    postal_code: str
    version: int
    updated_at: dt.datetime
    employee_ids: strawberry.Private[list[int]]
    at: strawberry.Private[int | None]
    """The commit this object was read at (None: now); nested fields are read at the same point."""

    @strawberry.field
    def employee_count(self) -> int:
        return len(self.employee_ids)

    @strawberry.field
    async def employees(self, info: strawberry.Info[Context, None]) -> list[Employee]:
        docs = await info.context.docs("employee", self.employee_ids, self.at)
        return [Employee.from_doc(doc, self.at) for doc in docs if doc is not None]

    @classmethod
    def from_doc(cls, doc: Doc, at: int | None = None) -> Location:
        return cls(
            id=doc["id"], street_address=doc["street_address"], city=doc["city"],
            state=doc["state"], postal_code=doc["postal_code"], version=doc["version"],
            updated_at=dt.datetime.fromisoformat(doc["updated_at"]),
            employee_ids=list(doc["employee_ids"]), at=at,
        )


@strawberry.type
class Employee:
    id: int
    first_name: str
    last_name: str
    date_of_birth: dt.date
    job_title: str
    location_id: int
    version: int
    updated_at: dt.datetime
    at: strawberry.Private[int | None]

    @strawberry.field
    async def location(self, info: strawberry.Info[Context, None]) -> Location | None:
        doc = await info.context.doc("location", self.location_id, self.at)
        return Location.from_doc(doc, self.at) if doc is not None else None

    @classmethod
    def from_doc(cls, doc: Doc, at: int | None = None) -> Employee:
        return cls(
            id=doc["id"], first_name=doc["first_name"], last_name=doc["last_name"],
            date_of_birth=dt.date.fromisoformat(doc["date_of_birth"]),
            job_title=doc["job_title"], location_id=doc["location_id"],
            version=doc["version"], updated_at=dt.datetime.fromisoformat(doc["updated_at"]),
            at=at,
        )


@strawberry.type
class EmployeeEdge:
    cursor: str
    node: Employee


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class EmployeeConnection:
    edges: list[EmployeeEdge]
    page_info: PageInfo
    total_count: int


def encode_cursor(employee_id: int) -> str:
    return base64.urlsafe_b64encode(f"employee:{employee_id}".encode()).decode()


def decode_cursor(cursor: str) -> int | None:
    """The employee id inside a cursor, or None if it is not one of ours."""
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
    except (ValueError, UnicodeError):
        return None
    return int(value) if kind == "employee" and value.isdigit() else None


@strawberry.type
class Event:
    position: int
    stream_id: str
    version: int
    type: str
    data: JSON
    recorded_at: dt.datetime
    correlation_id: str | None
    actor: str | None
    """Who caused the event (an API key's name or a JWT's `sub`), when authentication is on."""

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> Event:
        """An event as carried by the projector's change messages."""
        return cls(
            position=event["position"], stream_id=event["stream_id"], version=event["version"],
            type=event["type"], data=event["data"],
            recorded_at=dt.datetime.fromisoformat(event["recorded_at"]),
            correlation_id=event.get("correlation_id"), actor=event.get("actor"),
        )

    @classmethod
    def from_recorded(cls, event: RecordedEvent) -> Event:
        data: Any = event.data
        return cls(
            position=event.position, stream_id=event.stream_id, version=event.version,
            type=event.type, data=data, recorded_at=event.recorded_at,
            correlation_id=event.metadata.get("correlation_id"),
            actor=event.metadata.get("actor"),
        )


@strawberry.type
class ProjectionStatus:
    position: int
    head_position: int
    lag: int
    rebuilding: bool
