"""GraphQL object types, built from read-model documents."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import strawberry
from strawberry.scalars import JSON

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc
from app.schema import described
from app.schema.context import Context


@strawberry.type(description=(
    "A restaurant of the network, as the read model holds it now (or at the point in the past "
    "the query asked for, with asOf or atPosition)."
))
class Location:
    id: int = strawberry.field(description="The location's id, unique among locations.")
    street_address: str = strawberry.field(description="Street and number.")
    city: str = strawberry.field(description="City.")
    state: str = strawberry.field(description="State or region.")
    postal_code: str = strawberry.field(description="Postal code.")
    version: int = strawberry.field(description=(
        "How many events the location's own stream holds (1 once opened): the value to compare "
        "for optimistic concurrency. Hires and moves are recorded on the employees' streams and "
        "do not change it."
    ))
    updated_at: dt.datetime = strawberry.field(description=(
        "When the last event of the location's own stream was committed (UTC)."
    ))
    employee_ids: strawberry.Private[list[int]]
    at: strawberry.Private[int | None]
    """The commit this object was read at (None: now); nested fields are read at the same point."""

    @described.field("How many employees work here (at the same point in time).")
    def employee_count(self) -> int:
        return len(self.employee_ids)

    @described.field(
        "The employees who work here, ordered by id, read at the same point in time as the "
        "location. Terminated employees are not listed."
    )
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


@strawberry.type(description=(
    "A person employed by the network, working at exactly one location. A terminated employee "
    "is no longer found (null), except by asking about a point in time before the termination."
))
class Employee:
    id: int = strawberry.field(description="The employee's id, unique among employees.")
    first_name: str | None = strawberry.field(description=(
        "First name (personal data); null once erased (personalDataErased)."
    ))
    last_name: str | None = strawberry.field(description=(
        "Last name (personal data); null once erased (personalDataErased)."
    ))
    date_of_birth: dt.date | None = strawberry.field(description=(
        "Date of birth (personal data); employees are at least 16 years old when hired. Null "
        "once erased (personalDataErased)."
    ))
    personal_data_erased: bool = strawberry.field(description=(
        "Whether the employee's personal data was erased (forgetEmployee): then their names "
        "and date of birth read null now and at every point in the past."
    ))
    job_title: str = strawberry.field(description="Job title, such as Cook or Manager.")
    location_id: int = strawberry.field(description="The id of the location they work at.")
    version: int = strawberry.field(description=(
        "How many events the employee's stream holds (hire, assignments, title changes, "
        "termination): give it as expectedVersion to a mutation to refuse a concurrent change "
        "(CONCURRENCY_CONFLICT)."
    ))
    updated_at: dt.datetime = strawberry.field(description=(
        "When the last event of the employee's stream was committed (UTC)."
    ))
    at: strawberry.Private[int | None]

    @described.field(
        "The location they work at, read at the same point in time as the employee."
    )
    async def location(self, info: strawberry.Info[Context, None]) -> Location | None:
        doc = await info.context.doc("location", self.location_id, self.at)
        return Location.from_doc(doc, self.at) if doc is not None else None

    @classmethod
    def from_doc(cls, doc: Doc, at: int | None = None) -> Employee:
        return cls(
            id=doc["id"], first_name=doc["first_name"], last_name=doc["last_name"],
            date_of_birth=dt.date.fromisoformat(born) if (born := doc["date_of_birth"]) else None,
            personal_data_erased=doc.get("personal_data_erased", False),
            job_title=doc["job_title"], location_id=doc["location_id"],
            version=doc["version"], updated_at=dt.datetime.fromisoformat(doc["updated_at"]),
            at=at,
        )


@strawberry.type(description="One employee of a page, with the cursor that points at it.")
class EmployeeEdge:
    cursor: str = strawberry.field(description=(
        "An opaque position in the list: pass it as `after` to get the employees after this one."
    ))
    node: Employee = strawberry.field(description="The employee.")


@strawberry.type(description="Where a page ends, and whether more follow.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether employees follow this page.")
    end_cursor: str | None = strawberry.field(description=(
        "The cursor of the page's last employee (null for an empty page): the next page's `after`."
    ))


@strawberry.type(description="A page of employees, ordered by id (cursor pagination).")
class EmployeeConnection:
    edges: list[EmployeeEdge] = strawberry.field(description="The employees of this page.")
    page_info: PageInfo = strawberry.field(description="Where this page ends.")
    total_count: int = strawberry.field(description=(
        "How many employees the whole list holds, over all pages, at the same point in time."
    ))


def encode_cursor(employee_id: int) -> str:
    return base64.urlsafe_b64encode(f"employee:{employee_id}".encode()).decode()


def decode_cursor(cursor: str) -> int | None:
    """The employee id inside a cursor, or None if it is not one of ours."""
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
    except (ValueError, UnicodeError):
        return None
    return int(value) if kind == "employee" and value.isdigit() else None


@strawberry.type(description=(
    "One stored event: a fact the event store recorded, never changed afterwards. The event "
    "store is the source of truth; every other answer is a projection of its events."
))
class Event:
    position: int = strawberry.field(description=(
        "The event's place in the global order of the event store: positions count every event "
        "of every stream from 1, without gaps, in commit order. The events of one command are "
        "committed together, at consecutive positions."
    ))
    stream_id: str = strawberry.field(description=(
        "The stream (one per entity) the event belongs to: `location-{id}` or `employee-{id}`."
    ))
    version: int = strawberry.field(description=(
        "The event's place in its own stream, from 1: the entity's version once it was applied."
    ))
    type: str = strawberry.field(description=(
        "What happened: LocationCreated, EmployeeCreated, EmployeeAssignedToLocation, "
        "EmployeeRemovedFromLocation, EmployeeJobTitleChanged or EmployeeTerminated."
    ))
    data: JSON = strawberry.field(description=(
        "The event's fields, in the shape of the current schema version of its type."
    ))
    recorded_at: dt.datetime = strawberry.field(description=(
        "When the event was committed (UTC); it never decreases along the positions, which is "
        "what makes asOf well defined."
    ))
    correlation_id: str | None = strawberry.field(description=(
        "The request id (X-Request-ID) of the request whose command wrote the event; the same "
        "id is in the service's logs."
    ))
    actor: str | None = strawberry.field(description=(
        "Who caused the event (an API key's name or a JWT's `sub`), when authentication is on."
    ))

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


@strawberry.type(description=(
    "How far the read model (which answers queries) has caught up with the event store (which "
    "holds the truth)."
))
class ProjectionStatus:
    position: int = strawberry.field(description=(
        "The position of the last event the read model has applied: queries answer as of it."
    ))
    head_position: int = strawberry.field(description=(
        "The position of the newest event in the event store."
    ))
    lag: int = strawberry.field(description=(
        "How many events the read model has yet to apply (headPosition − position)."
    ))
    rebuilding: bool = strawberry.field(description=(
        "Whether a rebuild of the read model (`python -m app rebuild`) is under way; queries "
        "keep being answered from the current one meanwhile."
    ))
    parked_events: int = strawberry.field(description=(
        "How many events the read model has set aside (parked): each event it could not "
        "apply, and every later event of the same entity, kept in order. Those entities show "
        "their state from before their first parked event; everything else stays current. An "
        "operator applies them, after a fix, with `python -m app parked retry`."
    ))
    parked_streams: list[str] = strawberry.field(description=(
        "The streams (`employee-{id}`, `location-{id}`) whose events are parked, in the order "
        "they were parked."
    ))
