"""The projector: tails the event store by position and applies each batch to Redis exactly once.

Each batch is read from the checkpoint C, applied with WATCH on the checkpoint, and committed in
one MULTI/EXEC together with the new checkpoint and the PUBLISH of its changes. If any other
projector moved the checkpoint in between, EXEC aborts and nothing is applied: a crash or a race
can neither apply an event twice nor skip one.

On a generation of the read model (see `app.read_model.keys`), a live projector also WATCHes the
generation pointer: once a rebuild switched queries to a new generation, no batch lands in the
old one, and the projector says so (`GenerationChanged`). A checkpoint or pointer that vanished
(Redis flushed or replaced) is `ReadModelDamaged`: the caller rebuilds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from app.event_store.base import EventStore, RecordedEvent, StoreUnavailable
from app.observability import PROJECTION_BATCH
from app.projections import batch as projection
from app.projections.documents import Change, Doc, DocKey, iso, micros
from app.read_model.client import delete_matching
from app.read_model.keys import Keys

log = logging.getLogger(__name__)

# Adds every history entry of a batch in one command: ZADDs queued one per entity cost redis-py a
# packed command and a parsed QUEUED reply each (a batch touches ~1 000 entities). Runs inside the
# batch's MULTI/EXEC like any other command. ARGV: per key, its entry count then score, member…
ADD_HISTORY = """
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  local j = 0
  while j < n do
    local m = math.min(n - j, 1000)
    redis.call('ZADD', KEYS[i], unpack(ARGV, a, a + 2 * m - 1))
    a = a + 2 * m
    j = j + m
  end
end
return #KEYS
"""
CheckpointListener = Callable[[int], Awaitable[None]]
Audit = Callable[[], Awaitable[None]]
TRANSIENT = (StoreUnavailable, RedisConnectionError, RedisTimeoutError, OSError)


class ReadModelDamaged(Exception):
    """The read model lost keys it cannot be without (its checkpoint, its pointer, documents)."""


class GenerationChanged(Exception):
    """Queries were switched to another generation: this projector's generation is retired."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"the read model moved to generation {generation}")
        self.generation = generation


class Projector:
    def __init__(
        self,
        store: EventStore,
        redis: Redis,
        keys: Keys,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        live: bool = True,
    ) -> None:
        """`live`: publish each batch and (on a generation) apply only while queries read it;
        not live: fill a generation that is being rebuilt, silently."""
        self._store = store
        self._redis = redis
        self._keys = keys
        self._live = live
        self._fenced = live and keys.generation is not None
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._listeners: list[CheckpointListener] = []
        self.position = 0
        self.events_applied = 0
        self._prefetch: tuple[int, asyncio.Task[list[RecordedEvent]]] | None = None

    def wake(self, _position: int = 0) -> None:
        """New events were appended: stop waiting and catch up."""
        self._wake.set()

    def on_checkpoint(self, listener: CheckpointListener) -> None:
        self._listeners.append(listener)

    @property
    def keys(self) -> Keys:
        return self._keys

    async def run(self, audit: Audit | None = None, audit_every: float = 5.0) -> None:
        """Catch up, then follow live until cancelled; survives store and Redis outages.

        `audit` (every `audit_every` seconds) may raise `ReadModelDamaged`, which ends the run
        like a vanished checkpoint or a switched generation do.
        """
        await self.check_consistency()
        backoff = 0.1
        audited = time.monotonic()
        try:
            while True:
                try:
                    await self.catch_up()
                    backoff = 0.1
                    if audit is not None and time.monotonic() - audited >= audit_every:
                        await audit()
                        audited = time.monotonic()
                except TRANSIENT as exc:
                    log.warning("projector paused: %s; retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                raise_if_cancelled()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                self._wake.clear()
        finally:
            self._drop_prefetch()

    async def check_consistency(self) -> None:
        """A checkpoint beyond the store's head means the store was replaced: start over."""
        checkpoint = int(await self._redis.get(self._keys.checkpoint) or 0)
        head = await self._store.head_position()
        if checkpoint > head:
            if self._keys.generation is not None:
                raise ReadModelDamaged(
                    f"the read model is at {checkpoint} but the event store ends at {head}"
                )
            log.warning(
                "read model is at %d but the event store ends at %d: clearing it", checkpoint, head
            )
            await self.clear()

    async def clear(self) -> None:
        """Delete every key of this read model (of every generation, pointer included)."""
        await delete_matching(self._redis, Keys(self._keys.base).pattern())

    async def catch_up(self, until: int | None = None) -> None:
        """Apply everything committed so far (or every commit ending at or before `until`)."""
        try:
            while await self._pipeline(until):
                log.info("checkpoint moved under us (another projector?); re-reading")
        finally:
            self._drop_prefetch()

    async def _pipeline(self, until: int | None) -> bool:
        """Apply batches back to back, preparing each while the previous one is written.

        Batch N+1 is read (ahead), its documents fetched and the events applied while batch N's
        MULTI/EXEC is on its way to Redis; the documents N leaves are carried over in memory.
        N+1 is only sent once N has committed, and like any batch it WATCHes the checkpoint
        and applies only if the checkpoint is still where N left it: so exactly once holds, and
        documents fetched before N committed can only be ones N did not touch (those are
        carried) or ones a rival changed (then the checkpoint moved and N+1 aborts). True when
        a rival moved the checkpoint: the caller starts again from the checkpoint in Redis.
        """
        checkpoint = await self.checkpoint()
        carried: dict[DocKey, Doc | None] = {}
        writing: asyncio.Task[None] | None = None
        written: list[RecordedEvent] = []
        started = 0.0
        try:
            while True:
                raise_if_cancelled()
                events = await self._read(checkpoint)
                if until is not None:
                    events = [e for e in events if e.commit_position <= until]
                if not events:
                    break
                self._read_ahead(events[-1].position)
                keys = projection.touched(events)
                before = {k: carried[k] for k in keys if k in carried}
                missing = [k for k in keys if k not in carried]
                if missing:
                    raw = await self._redis.mget([self._keys.doc(k) for k in missing])
                    before.update(
                        (k, orjson.loads(v) if v is not None else None)
                        for k, v in zip(missing, raw, strict=True)
                    )
                result = projection.apply(events, before)
                if writing is not None:
                    await writing  # N is in Redis (or raised): only now may N+1 be sent
                    writing = None
                    await self._committed(written, started)
                    raise_if_cancelled()
                started = time.perf_counter()
                writing = asyncio.create_task(self._write_batch(checkpoint, events, result))
                written, carried, checkpoint = events, result.docs, events[-1].position
            if writing is not None:
                await writing
                writing = None
                await self._committed(written, started)
        except WatchError:
            self._drop_prefetch()
            return True
        finally:
            if writing is not None:  # cancelled or failed meanwhile: the batch in flight
                if not writing.done():  # lands (or not) before we go
                    await asyncio.wait([writing])
                if not writing.cancelled() and writing.exception() is None:
                    self.position = written[-1].position
                    self.events_applied += len(written)
        self.position = checkpoint  # where this catch-up left the read model
        return False

    async def _write_batch(
        self, checkpoint: int, events: list[RecordedEvent], result: projection.BatchResult
    ) -> None:
        """One batch in one MULTI/EXEC, if the checkpoint is still `checkpoint`."""
        async with self._redis.pipeline(transaction=True) as pipe:
            await self._watch(pipe, checkpoint)
            pipe.multi()  # type: ignore[no-untyped-call]
            self._queue_batch(pipe, checkpoint, events, result)
            await pipe.execute()

    async def _committed(self, events: list[RecordedEvent], started: float) -> None:
        self.position = events[-1].position
        self.events_applied += len(events)
        PROJECTION_BATCH.observe(len(events))
        log.debug("projected %d events up to %d in %.1f ms", len(events), self.position,
                  (time.perf_counter() - started) * 1000)
        if log.isEnabledFor(logging.DEBUG):  # one line per command, under its correlation id
            for event in events:
                if event.position == event.commit_position:
                    request = {"correlation_id": event.metadata.get("correlation_id")}
                    log.debug("projected the command ending at %d", event.position, extra=request)
        for listener in self._listeners:
            await listener(self.position)

    async def checkpoint(self) -> int:
        """Where this read model stands; on a generation, also checks that it is intact and
        (when live) still the one queries read."""
        if self._fenced:
            raw, pointer = await self._redis.mget(
                [self._keys.checkpoint, self._keys.generation_pointer]
            )
            return self._current(raw, pointer)
        return self._current(await self._redis.get(self._keys.checkpoint), None)

    def _current(self, raw: Any, pointer: Any) -> int:
        """The checkpoint `raw` as read (with the pointer when fenced), or why it cannot be used."""
        generation = self._keys.generation
        if generation is None:
            return int(raw or 0)
        if raw is None:
            raise ReadModelDamaged(f"the checkpoint of generation {generation} is missing")
        if self._fenced:
            if pointer is None:
                raise ReadModelDamaged("the generation pointer is missing")
            if int(pointer) != generation:
                raise GenerationChanged(int(pointer))
        return int(raw)

    async def _watch(self, pipe: Any, checkpoint: int) -> None:
        """WATCH what a batch depends on; WatchError if it already moved (the caller re-reads,
        and learns there why)."""
        watched = [self._keys.checkpoint]
        if self._fenced:
            watched.append(self._keys.generation_pointer)
        await pipe.watch(*watched)
        raw, *pointer = await pipe.mget(*watched)
        try:
            current = self._current(raw, pointer[0] if pointer else None)
        except (ReadModelDamaged, GenerationChanged) as moved:
            raise WatchError(str(moved)) from moved
        if current != checkpoint:
            raise WatchError("checkpoint changed")

    def _read_ahead(self, position: int) -> None:
        """Read the batch after `position` from the store while this one is being applied."""
        self._drop_prefetch()
        self._prefetch = (position, asyncio.create_task(
            self._store.read_batch(position, self._batch_size)
        ))

    async def step(self, until: int | None = None) -> bool:
        """Apply the next batch; False once there was nothing left to apply."""
        raise_if_cancelled()
        checkpoint = await self.checkpoint()
        events = await self._read(checkpoint)
        if until is not None:
            events = [e for e in events if e.commit_position <= until]
        if not events:
            self.position = checkpoint
            return False
        started = time.perf_counter()
        try:
            await self._commit(checkpoint, events)
        except WatchError:
            log.info("checkpoint moved under us (another projector?); re-reading")
            return True
        await self._committed(events, started)
        return True

    async def _read(self, checkpoint: int) -> list[RecordedEvent]:
        """The batch after `checkpoint`: the one read ahead if it starts there and is not empty."""
        prefetched, self._prefetch = self._prefetch, None
        if prefetched is not None:
            start, task = prefetched
            if start == checkpoint:
                events = await task
                if events:
                    return events
            else:
                _discard(task)
        return await self._store.read_batch(checkpoint, self._batch_size)

    def _drop_prefetch(self) -> None:
        if self._prefetch is not None:
            _discard(self._prefetch[1])
            self._prefetch = None

    async def _commit(self, checkpoint: int, events: list[RecordedEvent]) -> None:
        keys = projection.touched(events)
        async with self._redis.pipeline(transaction=True) as pipe:
            await self._watch(pipe, checkpoint)
            raw = await pipe.mget([self._keys.doc(k) for k in keys]) if keys else []
            before: dict[DocKey, Doc | None] = {
                k: orjson.loads(v) if v is not None else None
                for k, v in zip(keys, raw, strict=True)
            }
            result = projection.apply(events, before)
            pipe.multi()  # type: ignore[no-untyped-call]
            self._queue_batch(pipe, checkpoint, events, result)
            await pipe.execute()

    def _queue_batch(
        self, pipe: Any, checkpoint: int, events: list[RecordedEvent],
        result: projection.BatchResult,
    ) -> None:
        """The batch's writes, its checkpoint and its PUBLISH, queued inside MULTI."""
        changes = self._write(pipe, result.docs, result.changes, events)
        position = events[-1].position
        pipe.set(self._keys.checkpoint, position)
        if not self._live:
            return
        # {"from", "position", "changes": [Change.to_json()…], "events": [event_json()…]}, with
        # each change's document serialised once, for its history entry and for this message
        message = b'{"from":%d,"position":%d,"changes":[%b],"events":%b}' % (
            checkpoint, position, b",".join(changes),
            orjson.dumps([event_json(e) for e in events]),
        )
        pipe.publish(self._keys.changes_channel, message)

    def _write(
        self,
        pipe: Any,
        docs: dict[DocKey, Doc | None],
        changes: list[Change],
        events: list[RecordedEvent],
    ) -> list[bytes]:
        """Current state, indexes and time-travel history, a few commands per batch; returns
        each change as JSON (`Change.to_json()`) for the batch's message (live only)."""
        history: dict[str, dict[bytes, int]] = defaultdict(dict)
        created: dict[str, dict[str, int]] = defaultdict(dict)
        serialised: dict[int, bytes] = {}  # id(document) -> its JSON, each document once
        out: list[bytes] = []
        for change in changes:
            key: DocKey = (change.entity, change.entity_id)
            doc = change.doc
            body = b""
            if doc is not None:
                body = serialised.get(id(doc)) or orjson.dumps(doc)
                serialised[id(doc)] = body
            history[self._keys.history(key)][b"%015d|%b" % (change.position, body)] = (
                change.position
            )
            if change.kind == "CREATED":
                created[self._keys.created(change.entity)][str(change.entity_id)] = change.position
            if not self._live:
                continue  # a rebuild publishes no changes
            previous = change.previous_location_id
            out.append(
                b'{"position":%d,"kind":"%b","entity":"%b","id":%d,"doc":%b,'
                b'"previous_location_id":%b}' % (
                    change.position, change.kind.encode(), change.entity.encode(),
                    change.entity_id, body or b"null",
                    b"null" if previous is None else b"%d" % previous,
                )
            )
        current = {
            self._keys.doc(k): serialised.get(id(d)) or orjson.dumps(d)
            for k, d in docs.items() if d is not None
        }
        gone = [self._keys.doc(k) for k, d in docs.items() if d is None]
        live: dict[str, dict[str, int]] = defaultdict(dict)
        dead: dict[str, list[int]] = defaultdict(list)
        for (entity, entity_id), doc in docs.items():
            if doc is None:
                dead[self._keys.index(entity)].append(entity_id)
            else:
                live[self._keys.index(entity)][str(entity_id)] = entity_id
        if current:
            pipe.mset(current)
        if gone:
            pipe.delete(*gone)
        for index, members in live.items():
            pipe.zadd(index, members)
        for index, ids in dead.items():
            pipe.zrem(index, *ids)
        if history:
            args: list[bytes | int] = []
            for versions in history.values():
                args.append(len(versions))
                for member, score in versions.items():
                    args += (score, member)
            pipe.eval(ADD_HISTORY, len(history), *history, *args)
        for created_key, entries in created.items():
            pipe.zadd(created_key, entries, nx=True)
        pipe.zadd(self._keys.commits, {f"{e.commit_position:015d}": micros(e.recorded_at)
                                       for e in events if e.position == e.commit_position})
        return out


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """An event as subscribers of the `events` feed receive it."""
    return {
        "position": event.position, "stream_id": event.stream_id, "version": event.version,
        "type": event.type, "data": event.data, "recorded_at": iso(event.recorded_at),
        "correlation_id": event.metadata.get("correlation_id"),
        "actor": event.metadata.get("actor"),
    }


def _discard(task: asyncio.Task[Any]) -> None:
    """Drop a read-ahead nobody will use (its failure, if any, was only a read)."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" noise
    else:
        task.cancel()


def raise_if_cancelled() -> None:
    """Stop if this task was asked to, even when a cancellation was swallowed below us.

    On Python 3.11 `asyncio.wait_for` (the projector's idle wait uses it, and redis-py's own
    connection class writes every command through it) returns normally when a cancellation
    races a finished operation; `run()` would then go on forever and any shutdown awaiting the
    cancelled task would hang.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
