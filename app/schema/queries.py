"""Query resolvers: answered from the Redis read model only (the `events` log excepted)."""

from __future__ import annotations

import datetime as dt

import strawberry

from app.schema.context import Context
from app.schema.errors import ClientError
from app.schema.types import (
    Employee,
    EmployeeConnection,
    EmployeeEdge,
    Event,
    Location,
    PageInfo,
    ProjectionStatus,
    decode_cursor,
    encode_cursor,
)

Info = strawberry.Info[Context, None]


async def read_point(
    info: Info, as_of: dt.datetime | None, at_position: int | None, min_position: int | None
) -> None:
    """Check the time-travel arguments and honour `minPosition` (read-your-writes)."""
    if as_of is not None or at_position is not None:
        if as_of is not None and at_position is not None:
            raise ClientError("Give at most one of asOf and atPosition.", "BAD_USER_INPUT")
        raise ClientError(
            "Time travel (asOf / atPosition) is not served yet.", "TIME_TRAVEL_UNAVAILABLE"
        )
    if min_position is not None:
        services = info.context.services
        bound = services.settings.read_model_wait_seconds
        if not await services.waiter.wait_for(min_position, bound):
            raise ClientError(
                f"The read model has not reached position {min_position} within {bound:g} s.",
                "STALE_READ_MODEL",
                position=services.waiter.position,
            )


def page_size(info: Info, first: int) -> int:
    limit = info.context.services.settings.max_page_size
    if not 0 <= first <= limit:
        raise ClientError(f"first must be between 0 and {limit}.", "BAD_USER_INPUT")
    return first


@strawberry.type
class Query:
    @strawberry.field
    async def location(
        self, info: Info, id: int, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> Location | None:
        await read_point(info, as_of, at_position, min_position)
        doc = await info.context.locations.load(id)
        return Location.from_doc(doc) if doc is not None else None

    @strawberry.field
    async def locations(
        self, info: Info, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> list[Location]:
        await read_point(info, as_of, at_position, min_position)
        docs = await info.context.services.read_model.all_locations()
        info.context.prime(docs, info.context.locations)
        return [Location.from_doc(doc) for doc in docs]

    @strawberry.field
    async def employee(
        self, info: Info, id: int, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> Employee | None:
        await read_point(info, as_of, at_position, min_position)
        doc = await info.context.employees.load(id)
        return Employee.from_doc(doc) if doc is not None else None

    @strawberry.field
    async def employees(
        self, info: Info, location_id: int | None = None, first: int = 50,
        after: str | None = None, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> EmployeeConnection:
        await read_point(info, as_of, at_position, min_position)
        first = page_size(info, first)
        after_id = 0
        if after is not None:
            decoded = decode_cursor(after)
            if decoded is None:
                raise ClientError("after is not a cursor this API gave out.", "BAD_USER_INPUT")
            after_id = decoded
        context = info.context
        if location_id is None:
            page = await context.services.read_model.employee_page(after_id, first)
            docs, has_next, total = page.docs, page.has_next, page.total
        else:
            location = await context.locations.load(location_id)
            ids = list(location["employee_ids"]) if location else []
            rest = [i for i in ids if i > after_id]
            loaded = await context.employees.load_many(rest[:first])
            docs = [d for d in loaded if d is not None]
            has_next, total = len(rest) > first, len(ids)
        context.prime(docs, context.employees)
        edges = [
            EmployeeEdge(cursor=encode_cursor(d["id"]), node=Employee.from_doc(d)) for d in docs
        ]
        end = edges[-1].cursor if edges else None
        return EmployeeConnection(
            edges=edges, page_info=PageInfo(has_next_page=has_next, end_cursor=end),
            total_count=total,
        )

    @strawberry.field
    async def events(
        self, info: Info, after: int = 0, first: int = 100, stream_id: str | None = None
    ) -> list[Event]:
        first = page_size(info, first)
        recorded = await info.context.services.store.read_all(after, first, stream_id)
        return [Event.from_recorded(e) for e in recorded]

    @strawberry.field
    async def projection_status(self, info: Info) -> ProjectionStatus:
        services = info.context.services
        position = await services.read_model.checkpoint()
        head = await services.store.head_position()
        return ProjectionStatus(
            position=position, head_position=head, lag=max(head - position, 0), rebuilding=False
        )
