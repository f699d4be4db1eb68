"""Subscriptions: changes pushed after the projector committed them, in position order."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from enum import Enum
from typing import Any

import strawberry

from app.projections.documents import Change
from app.read_model.changes import Batch
from app.read_model.hub import Subscriber, SubscriptionClosed
from app.schema.context import Context
from app.schema.errors import ClientError
from app.schema.types import Employee, Event, Location

Info = strawberry.Info[Context, None]
REPLAY_PAGE = 500


@strawberry.enum
class ChangeKind(Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    REMOVED = "REMOVED"


@strawberry.type
class LocationChange:
    position: int
    kind: ChangeKind
    location_id: int
    location: Location | None


@strawberry.type
class EmployeeChange:
    position: int
    kind: ChangeKind
    employee_id: int
    employee: Employee | None


async def changes(
    info: Info, wanted: Callable[[Change], bool]
) -> AsyncGenerator[Change, None]:
    """Matching changes of every batch the hub delivers, until the subscription is closed."""
    def relevant(batch: Batch) -> bool:
        return any(wanted(change) for change in batch.changes)

    with info.context.services.hub.subscribe(wants=relevant) as subscriber:
        while True:
            batch = await _next(subscriber)
            info.context.forget()  # nested fields must not be answered from an older cache
            for change in batch.changes:
                if wanted(change):
                    yield change


async def _next(subscriber: Subscriber) -> Any:
    try:
        return await subscriber.next()
    except SubscriptionClosed as closed:
        raise ClientError(str(closed), closed.code) from closed


def _at_location(location_id: int, change: Change) -> bool:
    doc_location = change.doc.get("location_id") if change.doc else None
    return location_id in (doc_location, change.previous_location_id)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def location_changed(
        self, info: Info, id: int | None = None
    ) -> AsyncGenerator[LocationChange, None]:
        def wanted(change: Change) -> bool:
            return change.entity == "location" and id in (None, change.entity_id)

        async for change in changes(info, wanted):
            doc = change.doc
            yield LocationChange(
                position=change.position, kind=ChangeKind(change.kind),
                location_id=change.entity_id,
                location=Location.from_doc(doc, change.position) if doc is not None else None,
            )

    @strawberry.subscription
    async def employee_changed(
        self, info: Info, id: int | None = None, location_id: int | None = None
    ) -> AsyncGenerator[EmployeeChange, None]:
        def wanted(change: Change) -> bool:
            return (
                change.entity == "employee"
                and id in (None, change.entity_id)
                and (location_id is None or _at_location(location_id, change))
            )

        async for change in changes(info, wanted):
            doc = change.doc
            yield EmployeeChange(
                position=change.position, kind=ChangeKind(change.kind),
                employee_id=change.entity_id,
                employee=Employee.from_doc(doc, change.position) if doc is not None else None,
            )

    @strawberry.subscription
    async def events(
        self, info: Info, after: int | None = None, stream_id: str | None = None,
        types: list[str] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Every stored event after `after` from the store, then live: no gap, no duplicate."""
        services = info.context.services
        kinds = set(types) if types is not None else None

        def wanted(event: dict[str, Any]) -> bool:
            return stream_id in (None, event["stream_id"]) and (
                kinds is None or event["type"] in kinds
            )

        with services.hub.subscribe(heals_gaps=True) as subscriber:
            last = after if after is not None else await services.read_model.checkpoint()
            while True:  # replay from the store, up to its head
                page = await services.store.read_all(last, REPLAY_PAGE, stream_id)
                for recorded in page:
                    last = recorded.position
                    if kinds is None or recorded.type in kinds:
                        yield Event.from_recorded(recorded)
                if len(page) < REPLAY_PAGE:
                    break
            while True:  # live; a batch starting past `last` means a gap, filled from the store
                batch = await _next(subscriber)
                if batch.from_position > last:
                    for recorded in await services.store.read_all(
                        last, batch.from_position - last, stream_id
                    ):
                        if recorded.position > batch.from_position:
                            break  # the batch itself (or later) brings it: no duplicate
                        if kinds is None or recorded.type in kinds:
                            yield Event.from_recorded(recorded)
                    last = batch.from_position
                for event in batch.events:
                    if event["position"] > last:
                        last = event["position"]
                        if wanted(event):
                            yield Event.from_json(event)
