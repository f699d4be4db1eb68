"""The projector: tails the event store by position and applies each batch to Redis exactly once.

Each batch is read from the checkpoint C, applied with WATCH on the checkpoint, and committed in
one MULTI/EXEC together with the new checkpoint and the PUBLISH of its changes. If any other
projector moved the checkpoint in between, EXEC aborts and nothing is applied: a crash or a race
can neither apply an event twice nor skip one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from app.event_store.base import EventStore, RecordedEvent, StoreUnavailable
from app.projections import batch as projection
from app.projections.documents import Change, Doc, DocKey, micros
from app.read_model.keys import Keys

log = logging.getLogger(__name__)
CheckpointListener = Callable[[int], Awaitable[None]]
TRANSIENT = (StoreUnavailable, RedisConnectionError, RedisTimeoutError, OSError)


class Projector:
    def __init__(
        self,
        store: EventStore,
        redis: Redis,
        keys: Keys,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._redis = redis
        self._keys = keys
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._listeners: list[CheckpointListener] = []
        self.position = 0
        self.events_applied = 0

    def wake(self, _position: int = 0) -> None:
        """New events were appended: stop waiting and catch up."""
        self._wake.set()

    def on_checkpoint(self, listener: CheckpointListener) -> None:
        self._listeners.append(listener)

    async def run(self) -> None:
        """Catch up, then follow live until cancelled; survives store and Redis outages."""
        await self.check_consistency()
        backoff = 0.1
        while True:
            try:
                while await self.step():
                    pass
                backoff = 0.1
            except TRANSIENT as exc:
                log.warning("projector paused: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def check_consistency(self) -> None:
        """A checkpoint beyond the store's head means the store was replaced: start over."""
        checkpoint = int(await self._redis.get(self._keys.checkpoint) or 0)
        head = await self._store.head_position()
        if checkpoint > head:
            log.warning(
                "read model is at %d but the event store ends at %d: clearing it", checkpoint, head
            )
            await self.clear()

    async def clear(self) -> None:
        """Delete every key of this read model."""
        batch: list[str] = []
        async for key in self._redis.scan_iter(match=self._keys.pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self._redis.delete(*batch)
                batch = []
        if batch:
            await self._redis.delete(*batch)

    async def catch_up(self, until: int | None = None) -> None:
        """Apply everything committed so far (or every commit ending at or before `until`)."""
        while await self.step(until):
            pass

    async def step(self, until: int | None = None) -> bool:
        """Apply the next batch; False once there was nothing left to apply."""
        raise_if_cancelled()
        checkpoint = int(await self._redis.get(self._keys.checkpoint) or 0)
        events = await self._store.read_batch(checkpoint, self._batch_size)
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
        self.position = events[-1].position
        self.events_applied += len(events)
        log.debug("projected %d events up to %d in %.1f ms", len(events), self.position,
                  (time.perf_counter() - started) * 1000)
        for listener in self._listeners:
            await listener(self.position)
        return True

    async def _commit(self, checkpoint: int, events: list[RecordedEvent]) -> None:
        keys = projection.touched(events)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self._keys.checkpoint)
            if int(await pipe.get(self._keys.checkpoint) or 0) != checkpoint:
                raise WatchError("checkpoint changed")
            raw = await pipe.mget([self._keys.doc(k) for k in keys]) if keys else []
            before: dict[DocKey, Doc | None] = {
                k: json.loads(v) if v is not None else None for k, v in zip(keys, raw, strict=True)
            }
            result = projection.apply(events, before)
            pipe.multi()  # type: ignore[no-untyped-call]
            self._write(pipe, result.docs, result.changes, events)
            position = events[-1].position
            pipe.set(self._keys.checkpoint, position)
            message = {
                "from": checkpoint,
                "position": position,
                "changes": [c.to_json() for c in result.changes],
                "events": [event_json(e) for e in events],
            }
            pipe.publish(self._keys.changes_channel, compact(message))
            await pipe.execute()

    def _write(
        self,
        pipe: Any,
        docs: dict[DocKey, Doc | None],
        changes: list[Change],
        events: list[RecordedEvent],
    ) -> None:
        """Current state, indexes and time-travel history, a few commands per batch."""
        current = {self._keys.doc(k): compact(d) for k, d in docs.items() if d is not None}
        gone = [self._keys.doc(k) for k, d in docs.items() if d is None]
        live: dict[str, dict[str, int]] = defaultdict(dict)
        dead: dict[str, list[int]] = defaultdict(list)
        for (entity, entity_id), doc in docs.items():
            if doc is None:
                dead[self._keys.index(entity)].append(entity_id)
            else:
                live[self._keys.index(entity)][str(entity_id)] = entity_id
        history: dict[str, dict[str, int]] = defaultdict(dict)
        created: dict[str, dict[str, int]] = defaultdict(dict)
        for change in changes:
            key: DocKey = (change.entity, change.entity_id)
            body = compact(change.doc) if change.doc is not None else ""
            history[self._keys.history(key)][f"{change.position:015d}|{body}"] = change.position
            if change.kind == "CREATED":
                created[self._keys.created(change.entity)][str(change.entity_id)] = change.position
        if current:
            pipe.mset(current)
        if gone:
            pipe.delete(*gone)
        for index, members in live.items():
            pipe.zadd(index, members)
        for index, ids in dead.items():
            pipe.zrem(index, *ids)
        for history_key, entries in history.items():
            pipe.zadd(history_key, entries)
        for created_key, entries in created.items():
            pipe.zadd(created_key, entries, nx=True)
        pipe.zadd(self._keys.commits, {f"{e.commit_position:015d}": micros(e.recorded_at)
                                       for e in events})


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def event_json(event: RecordedEvent) -> dict[str, Any]:
    """An event as subscribers of the `events` feed receive it."""
    return {
        "position": event.position, "stream_id": event.stream_id, "version": event.version,
        "type": event.type, "data": event.data, "recorded_at": event.recorded_at.isoformat(),
        "correlation_id": event.metadata.get("correlation_id"),
    }


def raise_if_cancelled() -> None:
    """Stop if this task was asked to, even when a cancellation was swallowed below us.

    On Python 3.11 `asyncio.wait_for` (redis-py sends every command through it) returns normally
    when a cancellation races a finished operation; `run()` would then go on forever and any
    shutdown awaiting the cancelled task would hang.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
