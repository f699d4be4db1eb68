"""The stored event contract: `type` strings, JSON data shapes, schema versions and upcasters.

Stored events are a persistence contract, not Python objects: each type has a current
`schema_version`, and an upcaster per older version turns old data into the next shape on read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, get_args

from app.domain import events as e

JSONDict = dict[str, Any]
Upcaster = Callable[[JSONDict], JSONDict]

EVENT_TYPES: dict[str, type[e.DomainEvent]] = {
    cls.__name__: cls for cls in get_args(e.DomainEvent)
}
"""Every stored `type` string and its class: `app.domain.events.DomainEvent` is the vocabulary."""


def _location_created_v1_to_v2(data: JSONDict) -> JSONDict:
    """v1 called the postal code `zip_code` (US-only addresses); v2 names it `postal_code`."""
    upgraded = {k: v for k, v in data.items() if k != "zip_code"}
    upgraded["postal_code"] = data["zip_code"]
    return upgraded


def _employee_created_v1_to_v2(data: JSONDict) -> JSONDict:
    """v1 stored the birth date as a midnight DateTime ("1990-05-17T00:00:00"); v2 as a date.
    (A v1 row masked by an erasure holds null there.)"""
    born = data["date_of_birth"]
    return {**data, "date_of_birth": born[:10] if born is not None else None}


def _employee_created_v2_to_v3(data: JSONDict) -> JSONDict:
    """v3 stores the personal fields sealed with the employee's key (app/event_store/keys.py
    opens them on read, before upcasting) and lets them be null: erased. A v2 row is plaintext,
    or masked in place (null, metadata `erased`) by an erasure: already v3's shape."""
    return data


PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "EmployeeCreated": ("first_name", "last_name", "date_of_birth"),
}
"""Per event type, its fields that are personal data: sealed with the key of the event's stream
when stored, null once that stream's personal data is erased."""

ERASURE = "EmployeePersonalDataErased"
"""The event that erases the personal data of its own stream."""


def without_personal(event_type: str, data: JSONDict) -> JSONDict:
    """`data` with its personal fields (if its type has any) null."""
    personal = PERSONAL_FIELDS.get(event_type)
    if not personal:
        return data
    return {**data, **dict.fromkeys(personal)}


class EventSchema:
    """Current versions plus the upcaster chain of every event type."""

    def __init__(self) -> None:
        self.current: dict[str, int] = dict.fromkeys(EVENT_TYPES, 1)
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Declare how data of `from_version` becomes `from_version + 1`."""
        self._upcasters[(event_type, from_version)] = upcaster
        self.current[event_type] = max(self.current.get(event_type, 1), from_version + 1)

    def upcast(self, event_type: str, schema_version: int, data: JSONDict) -> JSONDict:
        """Data in the current shape of its type, whatever version it was stored in."""
        target = self.current.get(event_type, schema_version)
        while schema_version < target:
            data = self._upcasters[(event_type, schema_version)](data)
            schema_version += 1
        return data

    def version_of(self, event_type: str) -> int:
        return self.current[event_type]


def default_schema() -> EventSchema:
    """The schema with every upcaster this service ships."""
    schema = EventSchema()
    schema.register("LocationCreated", 1, _location_created_v1_to_v2)
    schema.register("EmployeeCreated", 1, _employee_created_v1_to_v2)
    schema.register("EmployeeCreated", 2, _employee_created_v2_to_v3)
    return schema


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def plain(value: Any) -> JSONDict:
    """A flat dataclass's fields as JSON values (dates as ISO strings)."""
    data: JSONDict = {}
    for name in field_names(type(value)):
        item = getattr(value, name)
        data[name] = item.isoformat() if isinstance(item, dt.date) else item
    return data


def to_data(event: e.DomainEvent) -> JSONDict:
    """The JSON data of a domain event."""
    return plain(event)


def from_data(event_type: str, data: Mapping[str, Any]) -> e.DomainEvent:
    """The domain event of current-shape JSON data (KeyError for an unknown type)."""
    cls = EVENT_TYPES[event_type]
    values: JSONDict = {}
    for name in field_names(cls):
        raw = data[name]
        values[name] = dt.date.fromisoformat(raw) if name == "date_of_birth" and raw else raw
    return cls(**values)
