"""Location read model: a location's fields and the sorted ids of the employees assigned to it."""

from __future__ import annotations

import bisect

from app.domain.events import (
    DomainEvent,
    EmployeeAssignedToLocation,
    EmployeeRemovedFromLocation,
    LocationCreated,
)
from app.projections.documents import Doc, DocKey, Stamp, stamped


def keys(event: DomainEvent) -> list[DocKey]:
    """Location documents an event changes."""
    match event:
        case LocationCreated() | EmployeeAssignedToLocation() | EmployeeRemovedFromLocation():
            return [("location", event.location_id)]
    return []


def project(doc: Doc | None, event: DomainEvent, at: Stamp) -> Doc | None:
    """The location document after `event` (an employee moving in or out leaves the location's
    own version and time as they are: those follow its stream)."""
    if isinstance(event, LocationCreated):
        return stamped({
            "id": event.location_id, "street_address": event.street_address,
            "city": event.city, "state": event.state, "postal_code": event.postal_code,
            "employee_ids": [],
        }, at)
    if doc is None:
        return None
    members: list[int] = doc["employee_ids"]  # sorted, without duplicates
    new = doc.copy()
    match event:
        case EmployeeAssignedToLocation(employee_id=employee_id):
            at_index = bisect.bisect_left(members, employee_id)
            if at_index == len(members) or members[at_index] != employee_id:
                members = [*members[:at_index], employee_id, *members[at_index:]]
        case EmployeeRemovedFromLocation(employee_id=employee_id):
            at_index = bisect.bisect_left(members, employee_id)
            if at_index < len(members) and members[at_index] == employee_id:
                members = [*members[:at_index], *members[at_index + 1:]]
    new["employee_ids"] = list(members) if members is doc["employee_ids"] else members
    return new
