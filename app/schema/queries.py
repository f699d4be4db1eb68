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
) -> int | None:
    """The commit to answer at (None: now), after honouring `minPosition` (read-your-writes).

    A point beyond what the read model holds is answered at its newest commit: the state it had
    after the last event at or before that point. Add `minPosition` to wait for a known write.
    """
    services = info.context.services
    if min_position is not None:
        bound = services.settings.read_model_wait_seconds
        if not await services.waiter.wait_for(min_position, bound):
            raise ClientError(
                f"The read model has not reached position {min_position} within {bound:g} s.",
                "STALE_READ_MODEL",
                position=services.waiter.position,
            )
    if as_of is None and at_position is None:
        return None
    if as_of is not None and at_position is not None:
        raise ClientError("Give at most one of asOf and atPosition.", "BAD_USER_INPUT")
    if as_of is not None:
        moment = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=dt.UTC)
        return await services.read_model.position_at(moment)
    assert at_position is not None
    if at_position < 0:
        raise ClientError("atPosition cannot be negative.", "BAD_USER_INPUT")
    return min(at_position, await services.read_model.checkpoint())


def page_size(info: Info, first: int | None, default: int) -> int:
    """`first` within 0..MAX_PAGE_SIZE; null means the default."""
    first = default if first is None else first
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
        at = await read_point(info, as_of, at_position, min_position)
        doc = await info.context.doc("location", id, at)
        return Location.from_doc(doc, at) if doc is not None else None

    @strawberry.field
    async def locations(
        self, info: Info, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> list[Location]:
        at = await read_point(info, as_of, at_position, min_position)
        read_model = info.context.services.read_model
        docs = await (read_model.all_locations() if at is None else read_model.all_locations_at(at))
        info.context.prime("location", at, docs)
        return [Location.from_doc(doc, at) for doc in docs]

    @strawberry.field
    async def employee(
        self, info: Info, id: int, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> Employee | None:
        at = await read_point(info, as_of, at_position, min_position)
        doc = await info.context.doc("employee", id, at)
        return Employee.from_doc(doc, at) if doc is not None else None

    @strawberry.field
    async def employees(
        self, info: Info, location_id: int | None = None, first: int | None = 50,
        after: str | None = None, as_of: dt.datetime | None = None,
        at_position: int | None = None, min_position: int | None = None,
    ) -> EmployeeConnection:
        at = await read_point(info, as_of, at_position, min_position)
        first = page_size(info, first, 50)
        after_id = 0
        if after is not None:
            decoded = decode_cursor(after)
            if decoded is None:
                raise ClientError("after is not a cursor this API gave out.", "BAD_USER_INPUT")
            after_id = decoded
        context = info.context
        read_model = context.services.read_model
        if location_id is None:
            page = await (
                read_model.employee_page(after_id, first) if at is None
                else read_model.employee_page_at(after_id, first, at)
            )
            docs, has_next, total = page.docs, page.has_next, page.total
        else:
            location = await context.doc("location", location_id, at)
            ids = list(location["employee_ids"]) if location else []
            rest = [i for i in ids if i > after_id]
            loaded = await context.docs("employee", rest[:first], at)
            docs = [d for d in loaded if d is not None]
            has_next, total = len(rest) > first, len(ids)
        context.prime("employee", at, docs)
        edges = [
            EmployeeEdge(cursor=encode_cursor(d["id"]), node=Employee.from_doc(d, at))
            for d in docs
        ]
        end = edges[-1].cursor if edges else None
        return EmployeeConnection(
            edges=edges, page_info=PageInfo(has_next_page=has_next, end_cursor=end),
            total_count=total,
        )

    @strawberry.field
    async def events(
        self, info: Info, after: int | None = 0, first: int | None = 100,
        stream_id: str | None = None,
    ) -> list[Event]:
        first = page_size(info, first, 100)
        recorded = await info.context.services.store.read_all(after or 0, first, stream_id)
        return [Event.from_recorded(e) for e in recorded]

    @strawberry.field
    async def projection_status(self, info: Info) -> ProjectionStatus:
        services = info.context.services
        position = await services.read_model.checkpoint()
        head = await services.read_model.head()
        return ProjectionStatus(
            position=position, head_position=head, lag=max(head - position, 0),
            rebuilding=await services.read_model.rebuilding(),
        )
