"""How an operation executes: in time slices that leave the event loop to everyone else, and
with a subfield memo of its own for each subscription event.

The event loop runs every ready callback of one turn before it looks at the sockets again.
A big operation makes a turn long two ways: resolved without waiting (documents from the cache),
its fields run one after the other in one callback; waiting on Redis, thousands of its tasks
become ready at once and all run in the same turn. Either way `/healthz`, other requests and the
timer of the request's own deadline wait until it is done (a probe query held the loop 20 s).

So execution works in slices of `SLICE_SECONDS`. Every `CHECK_EVERY` values it completes it
looks at the clock; once its slice is used up it pauses: the values it meets from then on are
parked with what lies below them, handed back to graphql-core as awaitables, and the loop's next
turn completes them in order, one slice at a time. Between slices the loop polls its sockets and
fires its timers: a request's deadline (app/web/edge.py cancels it) lands within a slice, and
other requests are served in between.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections import deque
from typing import Any, NamedTuple

from graphql import GraphQLError
from graphql.execution.executor import CollectedErrors
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.observability import REJECTIONS
from app.schema.errors import ClientError, CodedRequestErrors

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.02
"""How long an operation runs before the loop gets a turn."""
CHECK_EVERY = 32
"""Values completed between looks at the clock (a power of two)."""
NOTHING_PARKED: deque[Any] = deque(maxlen=0)
"""Every executor's parked values until it parks one (it never holds any)."""


def with_deadline(seconds: float) -> type[SlicedExecutionContext]:
    """The execution context for operations that stop `seconds` after they start (0: never)."""
    return type(SlicedExecutionContext.__name__, (SlicedExecutionContext,),
                {"deadline_seconds": seconds})


class Parked(NamedTuple):
    """A value whose completion waits for the next slice."""

    future: asyncio.Future[Any]
    """Its completion (or the error completing it raised), awaited by what graphql-core got."""
    arguments: tuple[Any, ...]
    """Those of `complete_value`."""


class SlicedExecutionContext(CodedRequestErrors, StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, paced (see the module's docstring), with a deadline.

    An operation still running `deadline_seconds` after it started stops at its next look at
    the clock: nothing more is completed and its answer is one REQUEST_TIMEOUT error. Over HTTP
    the edge's timer (app/web/edge.py) usually answers first, with a 503; this is the deadline
    of operations on websockets, and of each event a subscription sends.
    """

    deadline_seconds = 0.0
    """0: none (`with_deadline` makes the class with one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_slicing()
        # graphql-core hands resolvers two bound methods of the executor, which it also keeps:
        # a reference cycle, so every finished operation's executor, with its collected fields,
        # variables and context, waited for the garbage collector (≈ 55 objects per request,
        # most of what a mutation left behind). Through a weak reference they go at once.
        executor = weakref.ref(self)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=lambda values: _alive(executor).gather_async_work(values),
            track=lambda values: _alive(executor).track_async_work(values),
        )

    def _start_slicing(self) -> None:
        try:
            self._task: asyncio.Task[Any] | None = asyncio.current_task()
        except RuntimeError:  # executed without an event loop: nothing to share it with
            self._task = None
        """The operation's own task: once it is cancelled, nothing parked is completed."""
        self._values = 0
        now = time.perf_counter()
        self._slice_ends = now + SLICE_SECONDS
        self._deadline = now + self.deadline_seconds if self.deadline_seconds > 0 else math.inf
        self._expired: GraphQLError | None = None
        """The answer once the deadline has passed (then `_paused` stays set)."""
        self._paused = False
        self._parked: deque[Parked] = NOTHING_PARKED
        """Values met during a pause, in order (a deque of its own from the first one: an
        empty deque is ≈ 700 bytes, and each subscriber holds its executor)."""

    def complete_value(
        self, return_type: Any, field_details_list: Any, info: Any, path: Path, result: Any,
        position_context: Any,
    ) -> Any:
        """Every value a field or a list item resolved to passes here on its way into the
        response, its selections below it: a pause parks whole subtrees, not single fields."""
        if not self._paused:
            self._values += 1
            if self._values & (CHECK_EVERY - 1) or (now := time.perf_counter()) < self._slice_ends:
                return super().complete_value(
                    return_type, field_details_list, info, path, result, position_context
                )
            self._paused = True
            if now >= self._deadline:
                self._expire()
            else:
                asyncio.get_running_loop().call_soon(self._next_slice)  # in the loop's next turn
        if self._expired is not None:
            raise self._expired
        future = asyncio.get_running_loop().create_future()
        if self._parked is NOTHING_PARKED:
            self._parked = deque()
        self._parked.append(Parked(
            future, (return_type, field_details_list, info, path, result, position_context)
        ))
        return self._parked_result(future)

    async def _parked_result(self, future: asyncio.Future[Any]) -> Any:
        completed = await future
        return await completed if self.is_awaitable(completed) else completed

    def _next_slice(self) -> None:
        """Complete parked values, oldest first, until they are done or the slice is used up
        (then the value being completed has scheduled the next slice). Each parked value's
        waiter is woken once, with its result: never a crowd woken to find the slice gone."""
        if self._expired is not None:
            return
        now = time.perf_counter()
        if now >= self._deadline:
            self._expire()
            return
        self._paused = False
        self._slice_ends = now + SLICE_SECONDS
        parked = self._parked
        if self._task is not None and (self._task.done() or self._task.cancelling()):
            self._drop_parked()
            return
        while parked and not self._paused:
            future, arguments = parked.popleft()
            if future.done():  # its waiter was cancelled (the deadline, say)
                continue
            try:
                future.set_result(super().complete_value(*arguments))
            except Exception as error:  # a field error, for the waiter's caller to place
                future.set_exception(error)
                future.exception()  # its waiter raises it; if the answer was given first, no one

    def _expire(self) -> None:
        """The deadline has passed: every parked value, and every value met from now on, fails
        at once with the timeout, so what remains of the operation unwinds without work."""
        self._paused = True
        self._expired = ClientError(
            f"The operation took longer than {self.deadline_seconds:g} s; try again.",
            "REQUEST_TIMEOUT",
        )
        # Raised for every value met from now on: with a path of its own, graphql-core takes
        # it as located already instead of building a new error for each one (thousands of
        # them held the loop over a second).
        self._expired.path = []
        while self._parked:
            future = self._parked.popleft().future
            if not future.done():
                future.set_exception(self._expired)
                future.exception()

    def build_response(self, data: dict[str, Any] | None) -> Any:
        """The operation is over, also when an error nulled it all before every parked value
        was completed: what is still parked is dropped, never completed after the answer. One
        that ran out of time answers with the timeout alone, not with what it had by then."""
        self._drop_parked()
        if self._expired is not None:
            REJECTIONS.labels("timeout").inc()
            log.warning("an operation stopped after %ss", self.deadline_seconds)
            self.collected_errors = CollectedErrors()
            self.collected_errors.add(self._expired, None)
            data = None
        return super().build_response(data)

    def _drop_parked(self) -> None:
        while self._parked:
            self._parked.popleft().future.cancel()

    def build_per_event_executor(self, payload: Any) -> Any:
        """Each subscription event gets its own subfield memo and its own slices.

        graphql-core 3.3 builds each event's executor as a shallow copy that shares the memo of
        collected subfields, keyed by field lists that are new for every event and kept alive
        by it: a long-lived subscription grew by 1-2 KB per event pushed (found by
        `bench/soak.py`).
        """
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        if isinstance(executor, SlicedExecutionContext):
            executor._start_slicing()
        return executor


def _alive(executor: weakref.ref[SlicedExecutionContext]) -> SlicedExecutionContext:
    """The executor a resolver's helpers belong to (alive while any of its resolvers runs)."""
    found = executor()
    assert found is not None
    return found
