"""Every Redis key and channel of the read model, under one prefix.

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

from app.projections.documents import DocKey


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
        # shared by every generation
        self.changes_channel = f"{base}:changes"
        self.appended_channel = f"{base}:appended"
        self.head = f"{base}:head"
        self.generation_pointer = f"{base}:generation"
        self.generation_counter = f"{base}:generations"
        self.leader = f"{base}:projector:leader"
        self.rebuilding = f"{base}:rebuilding"
        self.unbuilt = f"{base}:unbuilt"  # a generation created empty over a non-empty log

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
