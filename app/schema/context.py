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
    principal: Principal | None = ANONYMOUS
    """Who asks (None: nobody authenticated yet); its name is the actor of written events."""
    auth_error: AuthError | None = None
    """Why the request is not authenticated, refused when an operation executes."""
    connection_params: dict[str, Any] | None = None
    """A websocket's connection_init payload (strawberry sets it)."""
    _loaders: dict[tuple[Entity, int | None], DataLoader[int, Doc | None]] = field(
        init=False, default_factory=dict
    )

    async def doc(self, entity: Entity, entity_id: int, at: int | None) -> Doc | None:
        """One document now (`at` None) or right after commit `at`."""
        return (await self.docs(entity, [entity_id], at))[0]

    async def docs(self, entity: Entity, ids: Sequence[int], at: int | None) -> list[Doc | None]:
        """Documents now (`at` None) or right after commit `at`: current ones from this
        process's document cache when it can answer them all, the rest batched per request
        (every field asking in the same tick shares one Redis round trip)."""
        if at is None and (cached := self.services.read_model.cached(entity, ids)) is not None:
            return cached
        loader = self._loader(entity, at)
        if len(ids) == 1:
            return [await loader.load(ids[0])]
        return await loader.load_many(ids)

    def prime(self, entity: Entity, at: int | None, docs: Sequence[Doc]) -> None:
        """Docs already read by a list query need no second read when nested fields ask again."""
        loader = self._loader(entity, at)
        for doc in docs:
            loader.prime(int(doc["id"]), doc)

    def forget(self) -> None:
        """Drop cached documents (a websocket context outlives many pushed changes)."""
        self._loaders.clear()

    def _loader(self, entity: Entity, at: int | None) -> DataLoader[int, Doc | None]:
        loader = self._loaders.get((entity, at))
        if loader is None:
            read_model = self.services.read_model

            async def load(ids: Sequence[int]) -> list[Doc | None]:
                if at is None:
                    return await read_model.current(entity, ids)
                return await read_model.docs_at(entity, ids, at)

            loader = self._loaders[(entity, at)] = DataLoader(load)
        return loader
