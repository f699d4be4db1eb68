"""The read model's layout in Redis: every key and channel, the Lua scripts, how a projected
batch becomes Redis commands, and how those are read back. The one place that knows it.

Current state is one JSON document per entity (`{p}:location:{id}`, `{p}:employee:{id}`, read
with MGET) plus sorted sets of live ids scored by id. Time travel reads beside them: per entity a
history sorted set of its documents scored by commit position, per kind a creation index, and
one sorted set mapping commit positions to their `recorded_at`.

The service keeps its read model in generations (blue/green): the data of generation N lives
under `{base}:g{N}`, and `{base}:generation` names the one queries read. A rebuild fills a new
generation beside the live one and switches the pointer in one transaction. Channels, the head
position, the pointer, the projector's leader lease and the rebuild status stay under `{base}`.
`Keys(base)` alone (no generation) puts the data directly under `{base}`: one fixed read model,
as tests and benchmarks use it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.event_store.base import RecordedEvent
from app.projections.batch import BatchResult
from app.projections.documents import Doc, DocKey, micros
from app.projections.employees import erased
from app.read_model import changes as messages

# One batch, all or nothing, if the read model still stands where the batch was read from: its
# checkpoint, and the number of its parked events (a retry of parked events changes documents
# without moving the checkpoint; it only ever shrinks the parked set, and a batch only grows it,
# so the pair never comes back to a value once left).
# KEYS: the checkpoint, the generation pointer, the parked set. ARGV: the checkpoint the batch was
# read from, the generation the batch is for ('' when the pointer is not checked), '1' when an
# absent checkpoint means 0 (a read model without generations), the number of parked events the
# batch was read with, then the writes: per command, its argument count then its arguments.
# Returns 1 when applied, else {checkpoint, pointer} as they are.
# (Atomic like MULTI/EXEC, and one round trip instead of WATCH, a read and EXEC.)
APPLY = """
local checkpoint = redis.call('GET', KEYS[1])
local pointer = false
if ARGV[2] ~= '' then pointer = redis.call('GET', KEYS[2]) end
local current = checkpoint
if not current and ARGV[3] == '1' then current = '0' end
if current ~= ARGV[1] or (ARGV[2] ~= '' and pointer ~= ARGV[2])
    or redis.call('ZCARD', KEYS[3]) ~= tonumber(ARGV[4]) then
  return {checkpoint, pointer}
end
local a = 5
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  redis.call(unpack(ARGV, a + 1, a + n))
  a = a + n + 1
end
return 1
"""

# For each history key, its newest member scored at or below ARGV[1] ('' if none): one round trip
# and one command for any number of entities, each lookup O(log n) in its history's length.
LATEST_AT = """
local out = {}
for i = 1, #KEYS do
  local hit = redis.call('ZREVRANGEBYSCORE', KEYS[i], ARGV[1], '-inf', 'LIMIT', 0, 1)
  out[i] = hit[1] or ''
end
return out
"""

# SET key to ARGV[1] unless it already holds a larger number (writers report out of order);
# with a channel name as ARGV[2], PUBLISH the number there too (one command, one round trip).
RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[2] then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return 0
"""
# The projector's lease (app/projector/leader.py): extend it only if we still hold it (it may
# have expired and been taken meanwhile); release it only if we hold it.
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
CHUNK = 1000  # members per MSET/ZADD: Lua's unpack() takes at most ~8 000 values


class Keys:
    def __init__(self, base: str, generation: int | None = None) -> None:
        self.base = base
        self.generation = generation
        prefix = base if generation is None else f"{base}:g{generation}"
        self.prefix = prefix
        self.checkpoint = f"{prefix}:checkpoint"
        self.locations = f"{prefix}:locations"
        self.employees = f"{prefix}:employees"
        self.commits = f"{prefix}:commits"
        # events set aside because a projection could not apply them: member
        # `{position:015d}|{stream_id}`, scored by position (app/projector/parked.py)
        self.parked = f"{prefix}:parked"
        # shared by every generation
        self.changes_channel = f"{base}:changes"
        self.appended_channel = f"{base}:appended"
        self.head = f"{base}:head"
        self.generation_pointer = f"{base}:generation"
        self.generation_counter = f"{base}:generations"
        self.leader = f"{base}:projector:leader"
        self.rebuilding = f"{base}:rebuilding"
        self.unbuilt = f"{base}:unbuilt"  # a generation created empty over a non-empty log
        self.fence = f"{base}:fence"  # written before WAIT: what replicas must have reached

    def at(self, generation: int) -> Keys:
        """The keys of generation `generation` of this read model."""
        return Keys(self.base, generation)

    def doc(self, key: DocKey) -> str:
        return f"{self.prefix}:{key[0]}:{key[1]}"

    def location(self, location_id: int) -> str:
        return self.doc(("location", location_id))

    def employee(self, employee_id: int) -> str:
        return self.doc(("employee", employee_id))

    def history(self, key: DocKey) -> str:
        return f"{self.prefix}:history:{key[0]}:{key[1]}"

    def created(self, entity: str) -> str:
        return f"{self.prefix}:created:{entity}"

    def index(self, entity: str) -> str:
        return self.locations if entity == "location" else self.employees

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this read model (of its generation, if any)."""
        return f"{self.prefix}:*"


def apply_keys(keys: Keys) -> list[str]:
    """APPLY's KEYS."""
    return [keys.checkpoint, keys.generation_pointer, keys.parked]


def _argv(
    keys: Keys, checkpoint: int, fenced: bool, parked: int
) -> tuple[list[Any], Callable[..., None]]:
    """The head of APPLY's ARGV (the checkpoint, pointer and parked count it applies only at)
    and the function that adds one command to it."""
    generation = keys.generation
    out: list[Any] = [
        checkpoint, generation if fenced else "", "1" if generation is None else "0", parked,
    ]

    def command(*args: Any) -> None:
        out.append(len(args))
        out.extend(args)

    return out, command


def apply_args(
    keys: Keys, checkpoint: int, fenced: bool, events: list[RecordedEvent], result: BatchResult,
    published: messages.Batch | None, parked: int,
    erased_history: dict[str, list[Any]] | None = None,
) -> list[Any]:
    """APPLY's ARGV for a batch read from `checkpoint` with `parked` events parked: its
    documents, indexes and time-travel history, the events it parks, the new checkpoint, and
    (a live projector's) the PUBLISH of its change message `published`.

    `erased_history`: per history key of an employee the batch erases, its members as stored
    before the batch: they are replaced by the same versions without personal data."""
    out, command = _argv(keys, checkpoint, fenced, parked)

    bodies: dict[int, bytes] = {}  # id(document) -> its JSON: each document serialised once

    def serialised(doc: Doc) -> bytes:
        body = bodies.get(id(doc))
        if body is None:
            body = bodies[id(doc)] = orjson.dumps(doc)
        return body

    for history_key, members in (erased_history or {}).items():
        command("DEL", history_key)
        for part in _chunks(_without_personal_data(members)):
            command("ZADD", history_key, *part)
    _current(command, keys, result.docs, serialised)
    _history(command, keys, result, serialised)
    commits: list[int | str] = []
    for e in events:
        if e.position == e.commit_position:
            commits += (micros(e.recorded_at), f"{e.commit_position:015d}")
    for part in _chunks(commits):
        command("ZADD", keys.commits, *part)
    aside: list[int | str] = []
    for parked_event in result.parked:
        aside += (parked_event.event.position, parked_member(parked_event.event))
    for part in _chunks(aside):
        command("ZADD", keys.parked, *part)
    position = events[-1].position
    command("SET", keys.checkpoint, position)
    if published is not None:
        command("PUBLISH", keys.changes_channel, messages.encode(published, serialised))
    return out


def _history(
    command: Callable[..., None], keys: Keys, result: BatchResult,
    serialised: Callable[[Doc], bytes],
) -> None:
    """Per changed entity a history member `{position:015d}|{document}` scored by position
    (empty document: gone), and per kind the creation index."""
    history: dict[str, list[bytes | int]] = defaultdict(list)
    created: dict[str, list[str | int]] = defaultdict(list)
    for change in result.changes:
        body = b"" if change.doc is None else serialised(change.doc)
        history[keys.history((change.entity, change.entity_id))] += (
            change.position, b"%015d|%b" % (change.position, body)
        )
        if change.kind == "CREATED":
            created[keys.created(change.entity)] += (change.position, change.entity_id)
    for history_key, versions in history.items():
        for part in _chunks(versions):
            command("ZADD", history_key, *part)
    for created_key, entries in created.items():
        for part in _chunks(entries):
            command("ZADD", created_key, "NX", *part)


def _without_personal_data(members: list[Any]) -> list[Any]:
    """ZADD arguments: history members (`{position:015d}|{document}`) rewritten erased."""
    out: list[Any] = []
    for member in members:
        raw = member.encode() if isinstance(member, str) else member
        position, _, body = raw.partition(b"|")
        if body:
            body = orjson.dumps(erased(orjson.loads(body)))
        out += (int(position), b"%b|%b" % (position, body))
    return out


def _current(
    command: Callable[..., None], keys: Keys, docs: dict[DocKey, Doc | None],
    serialised: Callable[[Doc], bytes],
) -> None:
    """Current documents and the sorted sets of live ids."""
    current: list[str | bytes] = []
    gone: list[str] = []
    live: dict[str, list[int]] = defaultdict(list)
    dead: dict[str, list[int]] = defaultdict(list)
    for k, doc in docs.items():
        if doc is None:
            gone.append(keys.doc(k))
            dead[keys.index(k[0])].append(k[1])
        else:
            current += (keys.doc(k), serialised(doc))
            live[keys.index(k[0])] += (k[1], k[1])
    for part in _chunks(current):
        command("MSET", *part)
    for part in _chunks(gone):
        command("DEL", *part)
    for index, members in live.items():
        for part in _chunks(members):
            command("ZADD", index, *part)
    for index, ids in dead.items():
        for part in _chunks(ids):
            command("ZREM", index, *part)


def retry_args(
    keys: Keys, checkpoint: int, fenced: bool, parked: int, rewrites: list[Rewrite],
    unparked: list[str], reparked: list[RecordedEvent], gone: list[int], live: bool,
) -> list[Any]:
    """APPLY's ARGV for a retry of parked events, read at `checkpoint` with `parked` events
    parked: each document's rewritten history, its current state and indexes, the parked set
    without `unparked` but with `reparked`, the commit clock without the commits of events
    `gone` from the store (removed by an operator), and (`live`) a notice that empties every API
    process's document cache (the switch notice, to the generation they already read: a retry
    changes documents behind positions they have already seen). The checkpoint stays."""
    out, command = _argv(keys, checkpoint, fenced, parked)

    def serialised(doc: Doc) -> bytes:
        return orjson.dumps(doc)

    for rewrite in rewrites:
        history = keys.history(rewrite.key)
        for part in _chunks(rewrite.old):
            command("ZREM", history, *part)
        versions: list[int | bytes] = []
        for position, doc in rewrite.new.items():
            body = b"" if doc is None else serialised(doc)
            versions += (position, b"%015d|%b" % (position, body))
        for part in _chunks(versions):
            command("ZADD", history, *part)
        if rewrite.created is not None:
            command("ZADD", keys.created(rewrite.key[0]), "NX", rewrite.created, rewrite.key[1])
    _current(command, keys, {r.key: r.current for r in rewrites}, serialised)
    for part in _chunks(unparked):
        command("ZREM", keys.parked, *part)
    for part in _chunks([f"{position:015d}" for position in gone]):
        command("ZREM", keys.commits, *part)
    aside: list[int | str] = []
    for event in reparked:
        aside += (event.position, parked_member(event))
    for part in _chunks(aside):
        command("ZADD", keys.parked, *part)
    if live and keys.generation is not None:
        command("PUBLISH", keys.changes_channel,
                messages.encode_switch(checkpoint, keys.generation))
    return out


@dataclass
class Rewrite:
    """A document's time-travel history from one position on, and its current state."""

    key: DocKey
    old: list[str]  # the members it replaces
    new: dict[int, Doc | None]  # its versions by commit position
    current: Doc | None
    created: int | None = None  # the commit that created it, if one of these did


def history_entry(member: str) -> tuple[int, Doc | None]:
    """A history member: (commit position, document or None)."""
    return int(member.partition("|")[0]), historic(member)


def parked_member(event: RecordedEvent) -> str:
    return f"{event.position:015d}|{event.stream_id}"


def parked_event(member: str) -> tuple[int, str]:
    """A member of the parked set: (position, stream id)."""
    position, _, stream_id = member.partition("|")
    return int(position), stream_id


def _chunks(values: list[Any]) -> list[list[Any]]:
    """`values` (pairs stay whole) in slices of at most CHUNK pairs."""
    step = 2 * CHUNK
    return [values[i:i + step] for i in range(0, len(values), step)]


def document(raw: str | bytes | None) -> Doc | None:
    """A current document as stored (None: absent)."""
    return orjson.loads(raw) if raw is not None else None


def historic(member: str) -> Doc | None:
    """A history member `{position}|{document}`; empty: absent (not yet created, or removed)."""
    _, _, body = member.partition("|")
    return orjson.loads(body) if body else None
