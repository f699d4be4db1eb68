"""Employee read model: an employee's fields and current location; terminated employees vanish."""

from __future__ import annotations

from app.event_store.base import RecordedEvent
from app.projections.documents import Doc, DocKey, iso, stamped

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
    data, kind = event.data, event.type
    if kind == "EmployeeCreated":
        new = {
            "id": data["employee_id"], "first_name": data["first_name"],
            "last_name": data["last_name"], "date_of_birth": data["date_of_birth"],
            "job_title": data["job_title"], "location_id": None,
        }
    elif doc is None or kind == "EmployeeTerminated":
        return None
    else:
        new = doc.copy()  # one new dict per event (documents already written stay as they are)
        if kind == "EmployeeAssignedToLocation":
            new["location_id"] = data["location_id"]
        elif kind == "EmployeeRemovedFromLocation":
            new["location_id"] = None
        elif kind == "EmployeeJobTitleChanged":
            new["job_title"] = data["job_title"]
    return stamped(new, event.version, iso(event.recorded_at), event.position)
