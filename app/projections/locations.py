"""Location read model: a location's fields and the sorted ids of the employees assigned to it."""

from __future__ import annotations

import bisect

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc, DocKey, iso, stamp


def keys(event: RecordedEvent) -> list[DocKey]:
    """Location documents an event changes."""
    if event.type == "LocationCreated" or event.type in (
        "EmployeeAssignedToLocation", "EmployeeRemovedFromLocation",
    ):
        return [("location", int(event.data["location_id"]))]
    return []


def project(doc: Doc | None, event: RecordedEvent) -> Doc | None:
    """The location document after `event`."""
    data = event.data
    if event.type == "LocationCreated":
        fields = {
            "id": data["location_id"], "street_address": data["street_address"],
            "city": data["city"], "state": data["state"], "postal_code": data["postal_code"],
            "employee_ids": [],
        }
        return stamp(fields, event.version, iso(event.recorded_at), event.position)
    if doc is None:
        return None
    members: list[int] = doc["employee_ids"]  # sorted, without duplicates
    employee_id = data["employee_id"]
    at = bisect.bisect_left(members, employee_id)
    present = at < len(members) and members[at] == employee_id
    if event.type == "EmployeeAssignedToLocation" and not present:
        members = [*members[:at], employee_id, *members[at:]]
    elif event.type == "EmployeeRemovedFromLocation" and present:
        members = [*members[:at], *members[at + 1:]]
    else:
        members = list(members)
    new = doc.copy()
    new["employee_ids"] = members
    return new
