"""Subscriptions: changes pushed after the projector committed them, in position order."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from enum import Enum
from typing import Annotated, Any

import strawberry

from app.projections.documents import Change
from app.read_model.changes import Batch
from app.read_model.hub import Subscriber, SubscriptionClosed
from app.schema import described, sharing
from app.schema.context import Context
from app.schema.errors import ClientError
from app.schema.types import Employee, Event, Location

Info = strawberry.Info[Context, None]
REPLAY_PAGE = 500


@strawberry.enum(description="What a change did to the entity in the read model.")
class ChangeKind(Enum):
    CREATED = strawberry.enum_value("CREATED", description="It exists from this change on.")
    UPDATED = strawberry.enum_value("UPDATED", description=(
        "It changed: a field, its version, or (for a location) its employees."
    ))
    REMOVED = strawberry.enum_value("REMOVED", description=(
        "It no longer exists (an employee terminated)."
    ))


CHANGE_POSITION = (
    "The position (in the event store's global order) of the commit that made the change; the "
    "read model had applied it before the change was sent."
)


@strawberry.type(description="A location changed in the read model.")
class LocationChange:
    position: int = strawberry.field(description=CHANGE_POSITION)
    kind: ChangeKind = strawberry.field(description="What the change did.")
    location_id: int = strawberry.field(description="The location's id.")
    location: Location | None = strawberry.field(description=(
        "The location after the change (null when removed); its nested fields are read at the "
        "change's position."
    ))


@strawberry.type(description="An employee changed in the read model.")
class EmployeeChange:
    position: int = strawberry.field(description=CHANGE_POSITION)
    kind: ChangeKind = strawberry.field(description="What the change did.")
    employee_id: int = strawberry.field(description="The employee's id.")
    employee: Employee | None = strawberry.field(description=(
        "The employee after the change (null when terminated); nested fields are read at the "
        "change's position."
    ))


async def changes(
    info: Info, wanted: Callable[[Change], bool]
) -> AsyncGenerator[Change, None]:
    """Matching changes of every batch the hub delivers, until the subscription is closed.

    Over a websocket the operation's channel sends them instead (app/schema/sharing.py): this
    then runs once per operation shape, as the channel's engine.
    """
    services = info.context.services
    try:
        if await sharing.follow(info.schema, services):
            return
    except SubscriptionClosed as closed:
        raise ClientError(str(closed), closed.code) from closed

    def relevant(batch: Batch) -> bool:
        return any(wanted(change) for change in batch.changes)

    with sharing.feed(services.hub, relevant) as subscriber:
        while True:
            batch = await _next(subscriber)
            info.context.forget()  # nested fields must not be answered from an older cache
            for change in batch.changes:
                if wanted(change):
                    sharing.note(batch)
                    yield change


async def _next(subscriber: Subscriber) -> Any:
    try:
        return await subscriber.next()
    except SubscriptionClosed as closed:
        raise ClientError(str(closed), closed.code) from closed


def _at_location(location_id: int, change: Change) -> bool:
    doc_location = change.doc.get("location_id") if change.doc else None
    return location_id in (doc_location, change.previous_location_id)


@strawberry.type(description=(
    "Pushed over a websocket (graphql-transport-ws or graphql-ws) in position order, after the "
    "read model holds each change. A subscriber that falls SUBSCRIPTION_QUEUE_SIZE batches "
    "behind is ended with the error SUBSCRIBER_TOO_SLOW. The reader role is needed when "
    "authentication is on, sent in connection_init (`{\"Authorization\": \"Bearer …\"}`)."
))
class Subscription:
    @described.subscription(
        "Each change to locations. Ends with CHANGES_INTERRUPTED if the change feed had a gap "
        "(resubscribe and query again)."
    )
    async def location_changed(
        self, info: Info,
        id: Annotated[int | None, strawberry.argument(description=(
            "Only this location's changes (all locations when left out)."
        ))] = None,
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

    @described.subscription(
        "Each change to employees. Ends with CHANGES_INTERRUPTED if the change feed had a gap "
        "(resubscribe and query again)."
    )
    async def employee_changed(
        self, info: Info,
        id: Annotated[int | None, strawberry.argument(description=(
            "Only this employee's changes."
        ))] = None,
        location_id: Annotated[int | None, strawberry.argument(description=(
            "Only changes of employees at this location, before or after the change: a move "
            "is seen by subscribers of both the old and the new location."
        ))] = None,
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

    @described.subscription(
        "Every event after `after`, replayed from the event store, then live as they are "
        "committed: no gap and no duplicate at the switch. Reconnect with the last position "
        "you saw to resume exactly."
    )
    async def events(
        self, info: Info,
        after: Annotated[int | None, strawberry.argument(description=(
            "Start after this position; left out, with the next event committed."
        ))] = None,
        stream_id: Annotated[str | None, strawberry.argument(description=(
            "Only this stream's events: `location-{id}` or `employee-{id}`."
        ))] = None,
        types: Annotated[list[str] | None, strawberry.argument(description=(
            "Only events of these types, such as EmployeeAssignedToLocation."
        ))] = None,
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
