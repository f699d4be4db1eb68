"""Erasure and the files on disk: what must happen after personal data is erased so that no file
the service wrote keeps the erased bytes, and `python -m app privacy compact`, which runs it.

Crypto-shredding (app/event_store/keys.py) makes the sealed values unreadable once the key row is
deleted, but the deleted row's bytes, the masked plaintext of older events and the read model's
old documents can linger in files: SQLite's freed pages and WAL (handled by the store itself:
`secure_delete` and a checkpoint after each erasure), PostgreSQL's dead tuples (until VACUUM
FULL rewrites the tables), and Redis's append-only file (until it is rewritten). The embedded
Valkey's file is rewritten after every erasure (app/bootstrap.py); for an external Redis and for
PostgreSQL the operator runs `compact` (docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05


async def _rewrite_finished(redis: Redis) -> None:
    """Poll until no rewrite of the append-only file runs or waits (INFO is all Redis offers)."""
    while True:
        info = await redis.info("persistence")
        if not (int(info.get("aof_rewrite_in_progress", 0))
                or int(info.get("aof_rewrite_scheduled", 0))):
            return
        await asyncio.sleep(POLL_SECONDS)


async def rewrite_append_only_file(redis: Redis) -> bool:
    """Rewrite the server's append-only file from its current data and wait until the new file
    replaced the old one. False when the server keeps no append-only file.

    A rewrite already running may have started before the erasure (its copy holds the old
    values): wait for it, then start one of ours."""
    info = await redis.info("persistence")
    if not int(info.get("aof_enabled", 0)):
        return False
    while True:
        try:
            await redis.bgrewriteaof()
            break
        except ResponseError:  # one already in progress
            await _rewrite_finished(redis)
    await _rewrite_finished(redis)
    status = (await redis.info("persistence")).get("aof_last_bgrewrite_status")
    if status != "ok":
        log.warning("rewriting the append-only file ended with status %s", status)
    return True
