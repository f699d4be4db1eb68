"""The per-request context: services, correlation id, and DataLoaders that die with the request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from strawberry.dataloader import DataLoader

from app.auth import ANONYMOUS, AuthError, Principal
from app.projections.documents import Doc, Entity

if TYPE_CHECKING:
    from app.bootstrap import Services


@dataclass
class Context:
    services: Services
    correlation_id: str
    locations: DataLoader[int, Doc | None] = field(init=False)
    employees: DataLoader[int, Doc | None] = field(init=False)

    _historic: dict[tuple[Entity, int], DataLoader[int, Doc | None]] = field(
        init=False, default_factory=dict
    )
    principal: Principal | None = ANONYMOUS
    """Who asks (None: nobody authenticated yet); its name is the actor of written events."""
    auth_error: AuthError | None = None
    """Why the request is not authenticated, refused when an operation executes."""
    connection_params: dict[str, Any] | None = None
    """A websocket's connection_init payload (strawberry sets it)."""

    def __post_init__(self) -> None:
        read_model = self.services.read_model

        async def load_locations(ids: Sequence[int]) -> list[Doc | None]:
            return await read_model.locations(ids)

        async def load_employees(ids: Sequence[int]) -> list[Doc | None]:
            return await read_model.employees(ids)

        self.locations = DataLoader(load_locations)
        self.employees = DataLoader(load_employees)

    def loader(self, entity: Entity, at: int | None) -> DataLoader[int, Doc | None]:
        """Documents now (`at` None) or right after commit `at`, batched per request."""
        if at is None:
            return self.locations if entity == "location" else self.employees
        if (entity, at) not in self._historic:
            read_model = self.services.read_model

            async def load(ids: Sequence[int]) -> list[Doc | None]:
                return await read_model.docs_at(entity, ids, at)

            self._historic[(entity, at)] = DataLoader(load)
        return self._historic[(entity, at)]

    def forget(self) -> None:
        """Drop cached documents (a websocket context outlives many pushed changes)."""
        self.locations.clear_all()
        self.employees.clear_all()
        self._historic.clear()

    def prime(self, docs: Sequence[Doc], loader: DataLoader[int, Doc | None]) -> None:
        """Docs already read by a list query need no second read when nested fields ask again."""
        for doc in docs:
            loader.prime(int(doc["id"]), doc)
