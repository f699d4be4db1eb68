"""Employee read model: an employee's fields and current location; terminated employees vanish."""

from __future__ import annotations

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc, DocKey, stamp

EMPLOYEE_EVENTS = frozenset({
    "EmployeeCreated", "EmployeeAssignedToLocation", "EmployeeRemovedFromLocation",
    "EmployeeJobTitleChanged", "EmployeeTerminated",
})


def keys(event: RecordedEvent) -> list[DocKey]:
    """Employee documents an event changes."""
    if event.type in EMPLOYEE_EVENTS:
        return [("employee", int(event.data["employee_id"]))]
    return []


def project(doc: Doc | None, event: RecordedEvent) -> Doc | None:
    """The employee document after `event` (None once terminated)."""
    data = event.data
    if event.type == "EmployeeCreated":
        doc = {
            "id": data["employee_id"], "first_name": data["first_name"],
            "last_name": data["last_name"], "date_of_birth": data["date_of_birth"],
            "job_title": data["job_title"], "location_id": None,
        }
    elif doc is None or event.type == "EmployeeTerminated":
        return None
    elif event.type == "EmployeeAssignedToLocation":
        doc = {**doc, "location_id": data["location_id"]}
    elif event.type == "EmployeeRemovedFromLocation":
        doc = {**doc, "location_id": None}
    elif event.type == "EmployeeJobTitleChanged":
        doc = {**doc, "job_title": data["job_title"]}
    return stamp(doc, event.version, event.recorded_at.isoformat(), event.position)
