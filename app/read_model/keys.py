"""Every Redis key and channel of the read model, under one prefix.

Current state is one JSON document per entity (`{p}:location:{id}`, `{p}:employee:{id}`, read
with MGET) plus sorted sets of live ids scored by id. Time travel reads beside them: per entity a
history sorted set of its documents scored by commit position, per kind a creation index, and
one sorted set mapping commit positions to their `recorded_at`.
"""

from __future__ import annotations

from app.projections.documents import DocKey


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.checkpoint = f"{prefix}:checkpoint"
        self.locations = f"{prefix}:locations"
        self.employees = f"{prefix}:employees"
        self.changes_channel = f"{prefix}:changes"
        self.appended_channel = f"{prefix}:appended"
        self.commits = f"{prefix}:commits"
        self.head = f"{prefix}:head"

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
        """A SCAN pattern matching every key of this read model."""
        return f"{self.prefix}:*"
