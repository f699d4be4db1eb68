"""The projector: tails the event store by position and applies each batch to Redis exactly once.

Each batch is read from the checkpoint C, projected in memory (app/projections/), and written by
one Lua script (`APPLY`, app/read_model/layout.py) that applies its writes, the new checkpoint and
the PUBLISH of its changes only if the checkpoint is still C. If any other projector moved the
checkpoint in between, nothing is applied: a crash or a race can neither apply an event twice
nor skip one.

On a generation of the read model (see app/read_model/layout.py), a live projector's batches are
also conditional on the generation pointer: once a rebuild switched queries to a new generation,
no batch lands in the old one, and the projector says so (`GenerationChanged`). A checkpoint or
pointer that vanished (Redis flushed or replaced) is `ReadModelDamaged`: the caller rebuilds.

An event a projection cannot apply never stops the projector: its commit is parked, with every
later event of its streams (app/projections/batch.py), in the same conditional script as the
batch; the projector keeps the parked streams in memory from where it read the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.backoff import Backoff
from app.domain.schema import ERASURE, without_personal
from app.event_store.base import EventStore, RecordedEvent, StoreUnavailable
from app.observability import PROJECTION_BATCH
from app.projections import batch as projection
from app.projections.documents import Doc, DocKey
from app.read_model import changes
from app.read_model.client import delete_matching
from app.read_model.layout import APPLY, Keys, apply_args, apply_keys, document, parked_event

log = logging.getLogger(__name__)

DOCUMENT_MEMORY = 4096  # documents a projector remembers from its latest batches
CheckpointListener = Callable[[int], Awaitable[None]]
BatchListener = Callable[[changes.Batch], None]
ErasureListener = Callable[[], Awaitable[object]]
Audit = Callable[[], Awaitable[None]]
TRANSIENT = (StoreUnavailable, RedisConnectionError, RedisTimeoutError, OSError)


class ReadModelDamaged(Exception):
    """The read model lost keys it cannot be without (its checkpoint, its pointer, documents)."""


class CheckpointMoved(Exception):
    """A batch was refused: the read model no longer stands where the batch was read from."""


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
        self._thorough = True  # the first round reads until the store has no more
        self._listeners: list[CheckpointListener] = []
        self._batch_listeners: list[BatchListener] = []
        self._erasure_listeners: list[ErasureListener] = []
        self.position = 0
        self.events_applied = 0
        self._prefetch: tuple[int, asyncio.Task[list[RecordedEvent]]] | None = None
        # Where this projector's last batch left the read model, and the documents its latest
        # batches wrote (the most recently used DOCUMENT_MEMORY): the next batch starts there
        # without reading them back, since it applies only if the checkpoint is still there.
        # None: read the checkpoint (and every document) from Redis.
        self._left: tuple[int, dict[DocKey, Doc | None]] | None = None
        # The streams parked where `_left` stands, and how many events are parked there.
        self._parked: set[str] = set()
        self._parked_count = 0
        self._apply = redis.register_script(APPLY)

    def wake(self, position: int = 0) -> None:
        """New events were appended (`position`: by this process, up to there): stop waiting
        and catch up."""
        if not position:  # another process's append: this process's memory lacks it
            self._thorough = True
        self._wake.set()

    def on_checkpoint(self, listener: CheckpointListener) -> None:
        self._listeners.append(listener)

    def on_batch(self, listener: BatchListener) -> None:
        """Call `listener(batch)` with each batch a live projector published, once it is in
        Redis and before the checkpoint listeners: the same batch its change message carries,
        in order, to this process without waiting for the feed (which brings it too)."""
        self._batch_listeners.append(listener)

    def on_erasure(self, listener: ErasureListener) -> None:
        """Call `listener()` once a batch that erases personal data is in Redis, before the
        checkpoint listeners (so an erasure's payload waits for it)."""
        self._erasure_listeners.append(listener)

    @property
    def keys(self) -> Keys:
        return self._keys

    async def run(self, audit: Audit | None = None, audit_every: float = 5.0) -> None:
        """Catch up, then follow live until cancelled; survives store and Redis outages.

        `audit` (every `audit_every` seconds) may raise `ReadModelDamaged`, which ends the run
        like a vanished checkpoint or a switched generation do.
        """
        await self.check_consistency()
        backoff = Backoff()
        audited = time.monotonic()
        try:
            while True:
                self._wake.clear()  # an append from here on wakes the next round
                thorough, self._thorough = self._thorough, False
                try:
                    await self.catch_up(thorough=thorough)
                    backoff.reset()
                    if audit is not None and time.monotonic() - audited >= audit_every:
                        await audit()
                        audited = time.monotonic()
                except TRANSIENT as exc:
                    delay = backoff.next_delay()
                    log.warning("projector paused: %s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                raise_if_cancelled()
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                    if not self._wake.is_set():  # a poll: look at Redis itself (damage, rivals)
                        self._left = None
                        self._thorough = True
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

    async def catch_up(self, until: int | None = None, thorough: bool = True) -> None:
        """Apply everything committed so far (or every commit ending at or before `until`).

        Not `thorough`: only this process appended since the last round, so a short batch
        is the last one (see `_pipeline`)."""
        try:
            while await self._pipeline(until, thorough):
                log.info("checkpoint moved under us (another projector?); re-reading")
        except BaseException:
            self._left = None
            raise
        finally:
            self._drop_prefetch()

    async def _pipeline(self, until: int | None, thorough: bool = True) -> bool:
        """Apply batches back to back, preparing each while the previous one is written.

        Batch N+1 is read (ahead), its documents fetched and the events applied while batch N
        is on its way to Redis; the documents N leaves are carried over in memory, with those of
        earlier batches (the DOCUMENT_MEMORY most recently used, also into the next catch-up,
        which starts where N left the read model). N+1 is only sent once N has committed, and
        like any batch it applies only if the checkpoint is still where N left it: so exactly
        once holds, and documents fetched before N committed can only be ones N did not touch
        (those are carried) or ones a rival changed (then the checkpoint moved, N+1 is refused
        and the memory is dropped). True when a rival moved the checkpoint: the caller starts
        again from the checkpoint in Redis.
        """
        if self._left is not None:
            checkpoint, carried = self._left
        else:
            checkpoint, carried = await self._standing(), {}
        writing: asyncio.Task[changes.Batch | None] | None = None
        written: list[RecordedEvent] = []
        set_aside: list[projection.Parked] = []
        started = 0.0
        last = False
        try:
            while True:
                raise_if_cancelled()
                if last:
                    break
                events = await self._read(checkpoint)
                # When only this process appended since the last round, a short batch is all
                # there is (its store keeps its own newest commits; whatever it appends later
                # wakes the projector again): the store is not asked once more for nothing, nor
                # read ahead of it. Another process's append (its notice) or a poll makes the
                # round thorough: it reads on until the store itself says there is no more.
                short = len(events) < self._batch_size
                last = short and not thorough
                if until is not None:
                    events = [e for e in events if e.commit_position <= until]
                if not events:
                    break
                if not short:
                    self._read_ahead(events[-1].position)
                decoded = projection.decode(events)
                keys = projection.touched(decoded)
                before = {k: carried[k] for k in keys if k in carried}
                missing = [k for k in keys if k not in carried]
                if missing:
                    raw = await self._redis.mget([self._keys.doc(k) for k in missing])
                    before.update(
                        (k, document(v)) for k, v in zip(missing, raw, strict=True)
                    )
                parked_before = self._parked_count
                result = projection.apply(decoded, before, self._parked)
                self._parked_count += len(result.parked)
                if writing is not None:
                    published = await writing  # N is in Redis (or raised): only now N+1 goes
                    writing = None
                    await self._committed(written, started, set_aside, published)
                    raise_if_cancelled()
                history = await self._erased_history(result.erased)
                started = time.perf_counter()
                writing = asyncio.create_task(
                    self._write_batch(checkpoint, events, result, parked_before, history)
                )
                written, checkpoint, set_aside = events, events[-1].position, result.parked
                self._left = None  # until N is known to be in Redis
                _remember(carried, result.docs)
            if writing is not None:
                published = await writing
                writing = None
                await self._committed(written, started, set_aside, published)
        except CheckpointMoved:
            self._drop_prefetch()
            self._left = None
            return True
        finally:
            if writing is not None:  # cancelled or failed meanwhile: the batch in flight
                if not writing.done():  # lands (or not) before we go
                    await asyncio.wait([writing])
                if not writing.cancelled() and writing.exception() is None:
                    self.position = written[-1].position
                    self.events_applied += len(written)
        self.position = checkpoint  # where this catch-up left the read model
        self._left = (checkpoint, carried)
        return False

    async def _erased_history(self, erased: list[int]) -> dict[str, list[Any]]:
        """The stored history of each employee a batch erases, read once the batches before it
        are in Redis; the batch applies only if nothing has been written since (its checkpoint
        check), so rewriting these members loses nothing."""
        history: dict[str, list[Any]] = {}
        for employee_id in erased:
            key = self._keys.history(("employee", employee_id))
            history[key] = await self._redis.zrange(key, 0, -1)
        return history

    async def _write_batch(
        self, checkpoint: int, events: list[RecordedEvent], result: projection.BatchResult,
        parked: int, erased_history: dict[str, list[Any]],
    ) -> changes.Batch | None:
        """One batch in one script call, applied only if the checkpoint is still `checkpoint`
        with `parked` events parked (and, fenced, the pointer still names this generation);
        else `CheckpointMoved`. An erasing batch publishes its events without the erased values
        (ones kept in memory may still hold them) and, once applied, calls the erasure
        listeners. An erasure parked with its stream is still published without them: it
        happened in the event store; only the read model waits for it."""
        streams = {f"employee-{employee_id}" for employee_id in result.erased}
        streams |= {e.stream_id for e in events if e.type == ERASURE}
        if streams:
            events = [replace(e, data=without_personal(e.type, e.data))
                      if e.stream_id in streams else e for e in events]
        published = changes.of(checkpoint, result.changes, events) if self._live else None
        outcome = await self._apply(
            keys=apply_keys(self._keys),
            args=apply_args(self._keys, checkpoint, self._fenced, events, result, published,
                            parked, erased_history),
        )
        if outcome != 1:
            raw, pointer = outcome
            try:
                current = self._current(raw, pointer if self._fenced else None)
            except (ReadModelDamaged, GenerationChanged) as moved:
                raise CheckpointMoved(str(moved)) from moved
            raise CheckpointMoved(f"the read model is at {current} (its parked events may "
                                  f"have been retried), not at {checkpoint}")
        if result.erased:
            for listener in self._erasure_listeners:
                try:
                    await listener()
                except Exception as exc:  # the read model is erased; only files lag behind
                    log.warning("clean-up after an erasure failed: %s", exc)
        return published

    async def _committed(
        self, events: list[RecordedEvent], started: float, parked: list[projection.Parked],
        published: changes.Batch | None,
    ) -> None:
        for aside in parked:
            log.log(
                logging.INFO if aside.reason == projection.BEHIND_PARKED else logging.WARNING,
                "parked the event at position %d of %s (%s): %s; retry with "
                "`python -m app parked retry`", aside.event.position, aside.event.stream_id,
                aside.event.type, aside.reason,
            )
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
        if published is not None:
            for deliver in self._batch_listeners:
                try:
                    deliver(published)
                except Exception:  # the feed still brings the batch
                    log.exception("batch listener failed")
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

    async def _standing(self) -> int:
        """`checkpoint()`, read together with the parked streams, which it remembers."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.checkpoint)
            pipe.get(self._keys.generation_pointer)
            pipe.zrange(self._keys.parked, 0, -1)
            raw, pointer, members = await pipe.execute()
        checkpoint = self._current(raw, pointer if self._fenced else None)
        self._parked = {parked_event(member)[1] for member in members}
        self._parked_count = len(members)
        return checkpoint

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

    def _read_ahead(self, position: int) -> None:
        """Read the batch after `position` from the store while this one is being applied."""
        self._drop_prefetch()
        self._prefetch = (position, asyncio.create_task(
            self._store.read_batch(position, self._batch_size)
        ))

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


def _remember(memory: dict[DocKey, Doc | None], docs: dict[DocKey, Doc | None]) -> None:
    """`docs` (a batch's) become the most recently used in `memory`, which then drops its least
    recently used beyond DOCUMENT_MEMORY, never one of `docs`: the next batch is prepared before
    this one is in Redis, and must not read what this one is writing."""
    for key, doc in docs.items():
        memory.pop(key, None)
        memory[key] = doc
    while len(memory) > max(DOCUMENT_MEMORY, len(docs)):
        del memory[next(iter(memory))]


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
