"""`serve --workers 2` on the default SQLite file: both processes write it at once.

Each worker's group commit first tries the file's write lock without waiting and, when the
other worker holds it, waits for it on its writer thread (app/event_store/sqlite_threads.py). Many
mutations sent at once on new connections (the kernel hands each to either worker) all
succeed, each at a position of its own, and every one is in the read model afterwards.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.harness.server import running_server

MUTATIONS = 120
ERRORS_IN_LOG = ('"level": "ERROR"', "Exception in ASGI application", "Traceback")
CREATE = """mutation($id: Int!) { createLocation(input: {id: $id, streetAddress: "1 Main St",
  city: "Springfield", state: "IL", postalCode: "62701"}) {
  __typename ... on LocationPayload { position location { id } } } }"""


async def test_two_workers_writing_one_sqlite_file_lose_and_refuse_nothing(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, extra_args=["--workers", "2"]) as server:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60.0,
                                     limits=limits) as client:

            async def create(location_id: int) -> int:
                response = await client.post(
                    "/graphql", json={"query": CREATE, "variables": {"id": location_id}}
                )
                payload = response.json()["data"]["createLocation"]
                assert payload["__typename"] == "LocationPayload", payload
                assert payload["location"]["id"] == location_id
                return int(payload["position"])

            positions = await asyncio.gather(*(create(i) for i in range(1, MUTATIONS + 1)))
            assert sorted(positions) == list(range(1, MUTATIONS + 1))  # one each, no gaps
            head = max(positions)
            listed = (await client.post("/graphql", json={
                "query": "query($p: Int) { locations(minPosition: $p) { id } }",
                "variables": {"p": head},
            })).json()["data"]["locations"]
            assert sorted(location["id"] for location in listed) == list(
                range(1, MUTATIONS + 1)
            )
    log = server.log_path.read_text()
    assert not [marker for marker in ERRORS_IN_LOG if marker in log], log[-3000:]
