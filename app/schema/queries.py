"""Query resolvers: answered from the Redis read model only (the `events` log excepted)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry

from app.schema import described
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

# The arguments every query of the read model takes.
AsOf = Annotated[dt.datetime | None, strawberry.argument(description=(
    "Time travel to a moment: the answer is the state right after the last commit recorded at "
    "or before this time: ISO 8601 with a time zone, e.g. 2030-01-01T12:00:00Z or "
    "2030-01-01T14:00:00+02:00 (a time without one is refused with BAD_USER_INPUT rather than "
    "guessed). Before the first event everything is empty. Give at most one of asOf and "
    "atPosition."
))]
AtPosition = Annotated[int | None, strawberry.argument(description=(
    "Time travel to a position. Every event has one: its place in the event store's single "
    "global order, 1, 2, 3… in commit order with no gaps. The answer is the state right after "
    "the last commit ending at or before this position (0: before the first event). The "
    "events of a command commit together, so no answer shows half a command; a position beyond "
    "what the read model holds is answered at its newest commit. Not negative; give at most "
    "one of asOf and atPosition (else BAD_USER_INPUT)."
))]
MinPosition = Annotated[int | None, strawberry.argument(description=(
    "Read your writes: first wait until the read model has applied this position (say, the "
    "`position` a mutation returned), at most READ_MODEL_WAIT_SECONDS (5 s by default); if it "
    "does not, the error STALE_READ_MODEL."
))]
PAGE_SIZE = (
    "How many to return at most: 0..MAX_PAGE_SIZE (500 by default; else BAD_USER_INPUT). It is "
    "also the factor by which the query cost multiplies what is selected inside the list."
)


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
        if as_of.tzinfo is None:  # a local time read as UTC would be a wrong answer, silently
            raise ClientError(
                "asOf needs a time zone, e.g. 2030-01-01T12:00:00Z or 2030-01-01T14:00:00+02:00.",
                "BAD_USER_INPUT",
            )
        return await services.read_model.position_at(as_of)
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


@strawberry.type(description=(
    "Reads. They are answered from the read model, a projection of the event store kept up to "
    "date by the projector a moment after each commit (minPosition waits for a given one); "
    "`events` reads the event store itself. A missing entity is null, lists are ordered by id. "
    "Every read of the read model can travel back in time (asOf or atPosition), nested fields "
    "at the same point. The reader role is needed when authentication is on (else "
    "UNAUTHENTICATED or FORBIDDEN). Every operation is priced before it runs (its cost, at most "
    "MAX_QUERY_COST): each field selected counts, a list multiplies what is selected inside it "
    "by its page size, and time travel doubles the price."
))
class Query:
    @described.field("One location, or null when there is none with this id (at that point).")
    async def location(
        self, info: Info,
        id: Annotated[int, strawberry.argument(description="The location's id.")],
        as_of: AsOf = None, at_position: AtPosition = None, min_position: MinPosition = None,
    ) -> Location | None:
        at = await read_point(info, as_of, at_position, min_position)
        doc = await info.context.doc("location", id, at)
        return Location.from_doc(doc, at) if doc is not None else None

    @described.field("Every location, ordered by id.")
    async def locations(
        self, info: Info, as_of: AsOf = None, at_position: AtPosition = None,
        min_position: MinPosition = None,
    ) -> list[Location]:
        at = await read_point(info, as_of, at_position, min_position)
        read_model = info.context.services.read_model
        docs = await (read_model.all_locations() if at is None else read_model.all_locations_at(at))
        info.context.prime("location", at, docs)
        return [Location.from_doc(doc, at) for doc in docs]

    @described.field(
        "One employee, or null when there is none with this id (at that point): never hired, or "
        "terminated."
    )
    async def employee(
        self, info: Info,
        id: Annotated[int, strawberry.argument(description="The employee's id.")],
        as_of: AsOf = None, at_position: AtPosition = None, min_position: MinPosition = None,
    ) -> Employee | None:
        at = await read_point(info, as_of, at_position, min_position)
        doc = await info.context.doc("employee", id, at)
        return Employee.from_doc(doc, at) if doc is not None else None

    @described.field("Employees, a page at a time, ordered by id.")
    async def employees(
        self, info: Info,
        location_id: Annotated[int | None, strawberry.argument(description=(
            "Only the employees of this location (at the same point in time)."
        ))] = None,
        first: Annotated[int | None, strawberry.argument(description=PAGE_SIZE)] = 50,
        after: Annotated[str | None, strawberry.argument(description=(
            "Start after this cursor (a page's endCursor); a cursor this API did not give out "
            "is BAD_USER_INPUT."
        ))] = None,
        as_of: AsOf = None, at_position: AtPosition = None, min_position: MinPosition = None,
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

    @described.field(
        "The event log itself, read from the event store in position order: what happened, "
        "when, and at whose request."
    )
    async def events(
        self, info: Info,
        after: Annotated[int | None, strawberry.argument(description=(
            "Start after this position (0: from the first event)."
        ))] = 0,
        first: Annotated[int | None, strawberry.argument(description=PAGE_SIZE)] = 100,
        stream_id: Annotated[str | None, strawberry.argument(description=(
            "Only this stream's events: `location-{id}` or `employee-{id}`."
        ))] = None,
    ) -> list[Event]:
        first = page_size(info, first, 100)
        recorded = await info.context.services.store.read_all(after or 0, first, stream_id)
        return [Event.from_recorded(e) for e in recorded]

    @described.field("How far the read model has caught up with the event store.")
    async def projection_status(self, info: Info) -> ProjectionStatus:
        services = info.context.services
        position = await services.read_model.checkpoint()
        head = await services.read_model.head()
        parked_events, parked_streams = await services.read_model.parked()
        return ProjectionStatus(
            position=position, head_position=head, lag=max(head - position, 0),
            rebuilding=await services.read_model.rebuilding(),
            parked_events=parked_events, parked_streams=parked_streams,
        )
