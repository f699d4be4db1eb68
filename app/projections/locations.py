"""Location read model: a location's fields and the sorted ids of the employees assigned to it."""

from __future__ import annotations

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc, DocKey, stamp


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
        return stamp(fields, event.version, event.recorded_at.isoformat(), event.position)
    if doc is None:
        return None
    members = set(doc["employee_ids"])
    if event.type == "EmployeeAssignedToLocation":
        members.add(data["employee_id"])
    elif event.type == "EmployeeRemovedFromLocation":
        members.discard(data["employee_id"])
    return {**doc, "employee_ids": sorted(members)}
