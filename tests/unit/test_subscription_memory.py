"""A long-lived subscription must not keep anything per event pushed (graphql-core 3.3 did)."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator

import strawberry
from graphql.execution.collect_fields import FieldDetails

from app.schema.execution import SlicedExecutionContext

EVENTS = 500


@strawberry.type
class Point:
    x: int
    y: int


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def points(self) -> AsyncGenerator[Point, None]:
        for n in range(EVENTS):
            yield Point(x=n, y=-n)


def field_details() -> int:
    gc.collect()
    return sum(isinstance(o, FieldDetails) for o in gc.get_objects())


async def kept_per_event(schema: strawberry.Schema) -> float:
    """FieldDetails alive while the subscription is still open, per event pushed."""
    stream = await schema.subscribe("subscription { points { x y } }")
    assert not isinstance(stream, strawberry.types.ExecutionResult)
    before = None
    received = 0
    async for result in stream:
        assert result.errors is None and result.data is not None
        received += 1
        if received == 10:
            before = field_details()
        if received == EVENTS:
            after = field_details()
            break
    await stream.aclose()
    assert before is not None
    return (after - before) / (EVENTS - 10)


async def test_the_service_schema_keeps_nothing_per_subscription_event() -> None:
    ours = strawberry.Schema(query=Query, subscription=Subscription,
                             execution_context_class=SlicedExecutionContext)
    assert await kept_per_event(ours) < 0.05
