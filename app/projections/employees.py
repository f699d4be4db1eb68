"""Employee read model: an employee's fields and current location; terminated employees vanish.
An erasure nulls the personal fields and sets `personal_data_erased` (`erased`); the projector
applies `erased` to every stored version of the employee too (app/projector/loop.py)."""

from __future__ import annotations

from app.domain.events import (
    DomainEvent,
    EmployeeAssignedToLocation,
    EmployeeCreated,
    EmployeeJobTitleChanged,
    EmployeePersonalDataErased,
    EmployeeRemovedFromLocation,
    EmployeeTerminated,
)
from app.projections.documents import Doc, DocKey, Stamp, stamped


def keys(event: DomainEvent) -> list[DocKey]:
    """Employee documents an event changes."""
    match event:
        case (EmployeeCreated() | EmployeeAssignedToLocation() | EmployeeRemovedFromLocation()
              | EmployeeJobTitleChanged() | EmployeeTerminated() | EmployeePersonalDataErased()):
            return [("employee", event.employee_id)]
    return []


def project(doc: Doc | None, event: DomainEvent, at: Stamp) -> Doc | None:
    """The employee document after `event` (None once terminated)."""
    if isinstance(event, EmployeeCreated):
        born = event.date_of_birth
        return stamped({
            "id": event.employee_id, "first_name": event.first_name,
            "last_name": event.last_name, "date_of_birth": born.isoformat() if born else None,
            "job_title": event.job_title, "location_id": None, "personal_data_erased": False,
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
        case EmployeePersonalDataErased():
            new = erased(new)
    return stamped(new, at)


PERSONAL = ("first_name", "last_name", "date_of_birth")


def erased(doc: Doc) -> Doc:
    """A new employee document without its personal data."""
    return {**doc, **dict.fromkeys(PERSONAL), "personal_data_erased": True}
