"""Employee read model: an employee's fields and current location; terminated employees vanish."""

from __future__ import annotations

from app.domain.events import (
    DomainEvent,
    EmployeeAssignedToLocation,
    EmployeeCreated,
    EmployeeJobTitleChanged,
    EmployeeRemovedFromLocation,
    EmployeeTerminated,
)
from app.projections.documents import Doc, DocKey, Stamp, stamped


def keys(event: DomainEvent) -> list[DocKey]:
    """Employee documents an event changes."""
    match event:
        case (EmployeeCreated() | EmployeeAssignedToLocation() | EmployeeRemovedFromLocation()
              | EmployeeJobTitleChanged() | EmployeeTerminated()):
            return [("employee", event.employee_id)]
    return []


def project(doc: Doc | None, event: DomainEvent, at: Stamp) -> Doc | None:
    """The employee document after `event` (None once terminated)."""
    if isinstance(event, EmployeeCreated):
        return stamped({
            "id": event.employee_id, "first_name": event.first_name,
            "last_name": event.last_name, "date_of_birth": event.date_of_birth.isoformat(),
            "job_title": event.job_title, "location_id": None,
        }, at)
    if doc is None or isinstance(event, EmployeeTerminated):
        return None
    new = doc.copy()  # one new dict per event (documents already written stay as they are)
    match event:
        case EmployeeAssignedToLocation(location_id=location_id):
            new["location_id"] = location_id
        case EmployeeRemovedFromLocation():
            new["location_id"] = None
        case EmployeeJobTitleChanged(job_title=job_title):
            new["job_title"] = job_title
    return stamped(new, at)
