"""Idempotency across API replicas: two identical mutations with one `idempotencyKey`, sent at
the same moment to two `serve` processes on one PostgreSQL, both get the original result, and
the command is written once. The store is the only thing the replicas share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from tests.e2e.test_faults import cluster, postgres
from tests.harness.cluster import Cluster, MutationClient, Outcome, server_log

__all__ = ["cluster", "postgres"]  # the fault tests' fixtures: a private PostgreSQL and Redis
PAIRS = 400
IN_FLIGHT = 40  # pairs sent at once (each pair's twins always together)

Send = Callable[[MutationClient, str], Awaitable[Outcome]]


async def twins(clients: list[MutationClient], send: Send, keys: list[str]) -> list[
        tuple[Outcome, Outcome]]:
    """Each key's twins, one to each replica at the same moment."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def pair(key: str) -> tuple[Outcome, Outcome]:
        async with gate:
            first, second = await asyncio.gather(send(clients[0], key), send(clients[1], key))
            return first, second

    return await asyncio.gather(*(pair(key) for key in keys))


def assert_one_result(pairs: list[tuple[Outcome, Outcome]]) -> None:
    for first, second in pairs:
        assert first.payload is not None and first.payload == second.payload, (
            first.input["idempotencyKey"],
            [(o.payload, o.refusal, o.error_codes) for o in (first, second)],
        )


async def test_simultaneous_twins_on_two_replicas_get_one_and_the_same_result(
    cluster: Cluster,
) -> None:
    await cluster.start_apis(2, projector=True)
    clients = [MutationClient(api.base_url, []) for api in cluster.apis]
    try:
        for location_id in (1, 2):
            assert (await clients[0].create_location(location_id)).succeeded

        async def hire(client: MutationClient, key: str) -> Outcome:
            n = int(key.removeprefix("hire-"))
            return await client.send("createEmployee", id=n, firstName="Ana", lastName="Smith",
                                     dateOfBirth="1990-05-17", jobTitle="Cook", locationId=1,
                                     idempotencyKey=key)

        async def move(client: MutationClient, key: str) -> Outcome:
            n = int(key.removeprefix("move-"))
            return await client.send("assignEmployeeToLocation", employeeId=n, locationId=2,
                                     idempotencyKey=key)

        hires = await twins(clients, hire, [f"hire-{n}" for n in range(1, PAIRS + 1)])
        assert_one_result(hires)
        moves = await twins(clients, move, [f"move-{n}" for n in range(1, PAIRS + 1)])
        assert_one_result(moves)
    finally:
        for client in clients:
            await client.aclose()

    assert [p.payload["employee"]["locationId"] for p, _ in moves if p.payload] == [2] * PAIRS
    versions = await cluster.stream_versions()  # each command written exactly once
    assert {versions[f"employee-{n}"] for n in range(1, PAIRS + 1)} == {4}
    for api in cluster.apis:
        levels = {json.loads(line).get("level") for line in server_log(api).splitlines()
                  if line.startswith("{")}
        assert not levels & {"ERROR", "CRITICAL"}, cluster.logs()
