"""A process-local copy of the current documents this process has read, kept current by the
change feed (every committed batch carries its new documents).

Each entry is tagged with the position it is known at: a document read from Redis is tagged with
the checkpoint read in the same MGET (the projector writes both in one script), a document
from the feed with its change's position, and a tag never goes backwards. The cache answers only
while it has applied every batch up to the newest checkpoint this process has seen (read with
documents, brought by the feed, or woken for by the read-your-writes waiter: the projector of
this process wakes mutations before their batch comes back through the feed), so `minPosition`
and a mutation's own read see their write; and only while the feed is connected
and without gaps: a lost subscription, a gap or a switch of generation empties it, and a read
that began before that is not stored.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.projections.documents import Doc, DocKey, Entity

if TYPE_CHECKING:
    from app.read_model.changes import Batch


class DocumentCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._docs: OrderedDict[DocKey, tuple[int, Doc | None]] = OrderedDict()
        self.position: int | None = None  # last batch applied; None: not following the feed
        self.known = 0  # the newest checkpoint this process has seen
        self.epoch = 0  # changes whenever the cache is emptied

    def follow(self, position: int) -> None:
        """The feed is (re)connected and the read model stands at `position`: start afresh."""
        self._reset()
        self.position = position
        self.saw(position)

    def stop(self) -> None:
        """The feed is lost: answer nothing until `follow` again."""
        self._reset()
        self.position = None

    def saw(self, checkpoint: int) -> None:
        self.known = max(self.known, checkpoint)

    def apply(self, batch: Batch) -> None:
        if self.position is None:
            return
        if batch.position <= self.position:
            return  # already applied (a repeated notice)
        if batch.from_position != self.position:  # missed batches: anything may be stale
            self._reset()
        for change in batch.changes:
            self._store((change.entity, change.entity_id), change.position, change.doc)
        self.position = batch.position
        self.saw(batch.position)

    def lookup(self, entity: Entity, ids: Sequence[int]) -> list[tuple[int, Doc | None] | None]:
        """Per id its (position, document), or None where this cache cannot answer."""
        if not self._answering():
            return [None] * len(ids)
        found: list[tuple[int, Doc | None] | None] = []
        for entity_id in ids:
            key = (entity, entity_id)
            entry = self._docs.get(key)
            if entry is not None:
                self._docs.move_to_end(key)
            found.append(entry)
        return found

    def answer(self, entity: Entity, ids: Sequence[int]) -> list[Doc | None] | None:
        """The documents (None where an entity is gone), if this cache can answer them all."""
        if not self._answering():
            return None
        docs: list[Doc | None] = []
        for entity_id in ids:
            key = (entity, entity_id)
            entry = self._docs.get(key)
            if entry is None:
                return None
            self._docs.move_to_end(key)
            docs.append(entry[1])
        return docs

    def put(self, entity: Entity, ids: Sequence[int], docs: Sequence[Doc | None],
            checkpoint: int, epoch: int) -> None:
        """Documents read from Redis at `checkpoint`, by a read that began in `epoch`."""
        self.saw(checkpoint)
        if epoch != self.epoch or self.position is None:
            return
        for entity_id, doc in zip(ids, docs, strict=True):
            self._store((entity, entity_id), checkpoint, doc)

    def _answering(self) -> bool:
        """Following the feed, and every batch up to the newest checkpoint seen is applied."""
        return self.position is not None and self.position >= self.known

    def __len__(self) -> int:
        return len(self._docs)

    def _store(self, key: DocKey, position: int, doc: Doc | None) -> None:
        entry = self._docs.get(key)
        if entry is not None and entry[0] > position:
            return  # never go back to an older version
        self._docs[key] = (position, doc)
        self._docs.move_to_end(key)
        if len(self._docs) > self._size:
            self._docs.popitem(last=False)

    def _reset(self) -> None:
        self._docs.clear()
        self.epoch += 1
