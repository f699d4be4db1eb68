"""Shared change subscriptions: each change is executed and encoded once per operation shape,
and the same text is sent to every subscriber of that shape.

Subscribers of a change feed mostly send the same document with the same variables (a screen
per location): executing the selection set, formatting the result and encoding it per
subscriber cost ≈ 250 µs per delivery, so 10 000 subscribers could not follow 20 changes a
second on one process. Here subscribers whose (query, operation name, variables) are equal form
a `Channel`:

- its engine is one ordinary subscription of that operation (strawberry, graphql-core, the
  resolver, the deadline, error masking: the very path every subscriber took before), run in a
  task of its own, with the reader role (each member passed its own role and cost checks when
  it subscribed);
- each result is encoded once; the `Fanout` puts the text in every member's bounded queue, a
  slice of members at a time (`SLICE_MEMBERS`), so the loop that also renews the projector's
  lease turns every few milliseconds however many subscribers there are;
- each member's own operation task sends its queue on its own socket under its own message id:
  a socket that does not drain blocks only its task, and a member `SUBSCRIPTION_QUEUE_SIZE`
  batches behind is ended with SUBSCRIBER_TOO_SLOW as before. A member gets only the changes of
  batches published after it joined (its `since`), whatever the engine still had queued.

The websocket handlers set `DELIVERY` for each operation's task: only operations of a socket
share. A resolver that finds no delivery (the engine itself, or a caller that is not a socket)
streams as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson
from strawberry.types.execution import ExecutionResult
from strawberry.utils.aio import aclosing

from app.auth import READER, Principal
from app.observability import SUBSCRIBERS, correlation_id, new_correlation_id
from app.read_model.hub import ChangeHub, Subscriber, SubscriptionClosed
from app.schema.context import Context
from app.slim import Flag

if TYPE_CHECKING:
    from strawberry.schema import BaseSchema

    from app.bootstrap import Services
    from app.read_model.changes import Batch

log = logging.getLogger(__name__)

SLICE_MEMBERS = 128
"""Members woken per loop turn: each then sends (≈ 30 µs), so a turn stays near 4 ms."""
ENGINE_PRINCIPAL = Principal(None, frozenset({READER}))
"""Who an engine runs as: every member was checked for this role itself."""
Key = tuple[str, str | None, bytes]


class Delivery:
    """How results of one websocket operation reach its client: `send(prefix + payload + "}")`,
    False once the client is gone."""

    __slots__ = ("channels", "operation_name", "prefix", "query", "send", "variables")

    def __init__(self, channels: Channels, query: str, variables: dict[str, Any] | None,
                 operation_name: str | None, prefix: str,
                 send: Callable[[str], Awaitable[bool]]) -> None:
        self.channels, self.query, self.variables = channels, query, variables
        self.operation_name, self.prefix, self.send = operation_name, prefix, send


DELIVERY: ContextVar[Delivery | None] = ContextVar("delivery", default=None)
"""Set by the websocket handler in each operation's task."""
ENGINE: ContextVar[Channel | None] = ContextVar("engine", default=None)
"""Set in an engine's task: its resolver reads the channel's feed and notes each batch."""


class Member:
    """One subscriber of a channel: its queue of encoded results, by batch."""

    __slots__ = ("_limit", "_wakeup", "closed", "ended", "queue", "since")

    def __init__(self, since: int | None, limit: int) -> None:
        self.since = since
        self._limit = limit
        # A list, not a deque (≈ 700 bytes empty): it is short and mostly empty.
        self.queue: list[tuple[int | None, list[str]]] = []
        self.closed: SubscriptionClosed | None = None
        self.ended = False
        self._wakeup = Flag()

    def push(self, batch: int | None, text: str) -> None:
        """Queue a result of `batch` (None: not of a batch, such as the error ending it all)."""
        if self.closed is not None or self.ended:
            return
        if batch is not None and self.since is not None and batch <= self.since:
            return  # published before this member joined
        queue = self.queue
        if queue and batch is not None and queue[-1][0] == batch:
            queue[-1][1].append(text)
        elif len(queue) >= self._limit:
            queue.clear()  # its memory goes now, not when the client finally reads
            self.closed = SubscriptionClosed(
                "This subscription fell too far behind and was closed; resubscribe.",
                "SUBSCRIBER_TOO_SLOW",
            )
        else:
            queue.append((batch, [text]))
        self._wakeup.set()

    def end(self) -> None:
        """The channel is over: the member completes once its queue is sent."""
        self.ended = True
        self._wakeup.set()

    async def deliver(self, prefix: str, send: Callable[[str], Awaitable[bool]]) -> None:
        """Send every result queued, until the channel ends or the client is gone;
        SubscriptionClosed if closed."""
        while True:
            if self.closed is not None:
                raise self.closed
            if self.queue:
                for text in self.queue.pop(0)[1]:
                    if not await send(f"{prefix}{text}}}"):
                        return
                continue
            if self.ended:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


class Channel:
    """Subscribers of one operation shape, and the engine that executes it once per change."""

    def __init__(self, channels: Channels, key: Key, delivery: Delivery, schema: BaseSchema,
                 services: Services) -> None:
        self.key, self._channels = key, channels
        self.members: dict[Member, None] = {}
        self.batch: int | None = None
        """The batch of the change being executed (the engine's resolver notes it)."""
        self._hub = services.hub
        # Subscribed now, not when the engine's resolver starts: no batch published after the
        # first member joined can be missed.
        self.subscriber: Subscriber = self._hub.subscribe(counted=False)
        self._task = asyncio.create_task(
            self._run(delivery, schema, services), name="subscription channel"
        )

    def leave(self, member: Member) -> None:
        if self.members.pop(member, False) is None:
            SUBSCRIBERS.dec()
        if not self.members:
            self._channels.forget(self)
            self._task.cancel()
            self._hub.unsubscribe(self.subscriber)  # also if the engine never started

    async def _run(self, delivery: Delivery, schema: BaseSchema, services: Services) -> None:
        ENGINE.set(self)
        DELIVERY.set(None)
        correlation_id.set(new_correlation_id())
        context = Context(services, correlation_id.get() or "", ENGINE_PRINCIPAL)
        try:
            with self.subscriber:
                stream = await schema.stream(
                    delivery.query, variable_values=delivery.variables, context_value=context,
                    operation_name=delivery.operation_name,
                )
                async with aclosing(stream):
                    async for result in stream:
                        await self._channels.fanout.send(self, self.batch, encode(result))
                        self.batch = None  # a result no change was noted for ends the stream
        except Exception:  # its members are told, and complete (they resubscribe)
            request = correlation_id.get()
            log.exception("a shared subscription failed")
            await self._channels.fanout.send(self, None, orjson.dumps({"data": None, "errors": [{
                "message": f"Internal server error (correlation id {request}).",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "correlationId": request},
            }]}).decode())
        finally:
            self._channels.forget(self)
            self._channels.fanout.end(self)


def encode(result: object) -> str:
    """A result's payload as strawberry's handlers put it in `next`/`data` messages."""
    assert isinstance(result, ExecutionResult)
    payload: dict[str, object] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return orjson.dumps(payload).decode()


class Fanout:
    """Puts each channel's results in its members' queues, in order, a slice per loop turn."""

    def __init__(self, backlog: int) -> None:
        self._jobs: deque[tuple[tuple[Member, ...], int | None, str | None]] = deque()
        self._backlog = backlog
        self._wakeup = Flag()
        self._room = Flag()
        self._task: asyncio.Task[None] | None = None

    async def send(self, channel: Channel, batch: int | None, text: str) -> None:
        """Queue a result for the members; waits while `backlog` results wait already, so an
        engine that outruns the fan-out falls behind on its own bounded feed, not in memory."""
        self._add((tuple(channel.members), batch, text))
        while len(self._jobs) > self._backlog:
            self._room.clear()
            await self._room.wait()

    def end(self, channel: Channel) -> None:
        """After the results sent before: its members complete."""
        self._add((tuple(channel.members), None, None))

    def _add(self, job: tuple[tuple[Member, ...], int | None, str | None]) -> None:
        self._jobs.append(job)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="subscription fan-out")

    async def _run(self) -> None:
        # Each member woken sends in its own task in the loop's next turn: waking a slice and
        # then yielding bounds that turn, so timers (the projector's lease) and sockets wait
        # for one slice, never for the whole crowd.
        woken = 0
        while True:
            while not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
            members, batch, text = self._jobs.popleft()
            if len(self._jobs) <= self._backlog:
                self._room.set()
            for member in members:
                if text is None:
                    member.end()
                else:
                    member.push(batch, text)
                woken += 1
                if woken >= SLICE_MEMBERS:
                    woken = 0
                    await asyncio.sleep(0)


class Channels:
    """The channels of one process, by operation shape."""

    def __init__(self, hub: ChangeHub) -> None:
        self._hub = hub
        self._channels: dict[Key, Channel] = {}
        self.fanout = Fanout(hub.queue_size)

    def join(self, delivery: Delivery, schema: BaseSchema, services: Services
             ) -> tuple[Channel, Member]:
        variables = orjson.dumps(delivery.variables, option=orjson.OPT_SORT_KEYS)
        key = (delivery.query, delivery.operation_name, variables)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(self, key, delivery, schema, services)
        member = Member(self._hub.position, self._hub.queue_size)
        channel.members[member] = None
        SUBSCRIBERS.inc()
        return channel, member

    def forget(self, channel: Channel) -> None:
        """No one joins it from now on."""
        if self._channels.get(channel.key) is channel:
            del self._channels[channel.key]


async def follow(schema: BaseSchema, services: Services) -> bool:
    """Whether this operation's results came from its channel (then it is over: the channel
    ended); False when it has none to share, and must stream by itself. SubscriptionClosed if
    this subscriber was closed."""
    delivery = DELIVERY.get()
    if delivery is None:
        return False
    channel, member = delivery.channels.join(delivery, schema, services)
    try:
        await member.deliver(delivery.prefix, delivery.send)
    finally:
        channel.leave(member)
    return True


@contextmanager
def feed(hub: ChangeHub, wants: Callable[[Batch], bool]) -> Iterator[Subscriber]:
    """The batches a change subscription reads: its channel's when it is an engine."""
    channel = ENGINE.get()
    if channel is None:
        with hub.subscribe(wants=wants) as subscriber:
            yield subscriber
    else:
        channel.subscriber.wants = wants
        yield channel.subscriber


def note(batch: Batch) -> None:
    """The changes yielded next are of `batch` (an engine tells its members by it)."""
    channel = ENGINE.get()
    if channel is not None:
        channel.batch = batch.position
