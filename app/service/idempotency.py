"""Idempotent commands: a retried request with the same `idempotencyKey` gets the original
result and writes nothing; the same key for a different request is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from app.domain import commands as c
from app.domain.errors import DomainError
from app.domain.validation import FieldChecker
from app.event_store.base import EventStore, IdempotencyRecord

log = logging.getLogger(__name__)
PRUNE_PERIOD_MAX = 3600.0  # seconds between prunings, at most; a tenth of the TTL when shorter


@dataclass(frozen=True, slots=True)
class CommandResult:
    entity: str
    entity_id: int
    position: int
    replayed: bool = False


class IdempotencyKeyReused(DomainError):
    code = "IDEMPOTENCY_KEY_REUSED"


def idempotency_record(cmd: c.Command, key: str | None) -> IdempotencyRecord | None:
    """What the store keeps under `key` for `cmd` (None without a key): the command's name and
    a fingerprint of its fields, to tell a retry from a reuse."""
    if key is None:
        return None
    check = FieldChecker()
    check.text("idempotency_key", "Idempotency Key", key)
    check.raise_if_any()
    fingerprint = hashlib.sha256(repr(cmd).encode()).hexdigest()
    return IdempotencyRecord(key, type(cmd).__name__, fingerprint)


def with_result(
    idempotency: IdempotencyRecord | None, entity: str, entity_id: int
) -> IdempotencyRecord | None:
    """The record with the result a retry will be given."""
    if idempotency is None:
        return None
    return IdempotencyRecord(
        idempotency.key, idempotency.command, idempotency.fingerprint,
        {"entity": entity, "id": entity_id},
    )


def replay(previous: IdempotencyRecord, asked: IdempotencyRecord) -> CommandResult:
    """The original result for a retry; IdempotencyKeyReused for a different request."""
    if (previous.command, previous.fingerprint) != (asked.command, asked.fingerprint):
        raise IdempotencyKeyReused("This idempotencyKey was already used for a different request.")
    result = previous.result
    return CommandResult(
        str(result["entity"]), int(result["id"]), previous.commit_position, replayed=True
    )


async def prune_forever(store: EventStore, ttl: float) -> None:
    """Delete the records of commands older than `ttl` seconds, now and every tenth of `ttl`
    (at most hourly): a key is remembered for `ttl`, and forgotten within 1.1 × `ttl`."""
    period = min(ttl / 10, PRUNE_PERIOD_MAX)
    while True:
        try:
            pruned = await store.prune_commands(
                dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ttl))
        except Exception as error:  # the database is away: the next round catches up
            log.warning("could not prune idempotency keys: %s", type(error).__name__)
        else:
            if pruned:
                log.info("pruned %d idempotency keys older than %g s", pruned, ttl)
        await asyncio.sleep(period)
