"""Projection lag on /metrics, against the real service run without its projector.

`serve --no-projector` appends events that nobody projects, so the lag (in events and in
seconds) is known; the request id a client sends is the correlation id of the events it caused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.harness.server import RunningServer, running_server

WAIT_SECONDS = 15.0


@pytest.fixture(scope="module")
def unprojected_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(
        tmp_path_factory.mktemp("observability"), extra_env={"READ_MODEL_WAIT_SECONDS": "0.2"},
        extra_args=["--no-projector"],
    ) as server:
        yield server


@pytest.fixture
async def http(unprojected_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=unprojected_server.base_url, timeout=30.0) as client:
        yield client


def samples(text: str) -> dict[str, float]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in lines)}


async def test_metrics_report_the_projection_lag_in_events_and_seconds(
    http: httpx.AsyncClient,
) -> None:
    before = samples((await http.get("/metrics")).text)
    assert before["cqrs_projection_lag_events"] == 0
    assert before["cqrs_projection_lag_seconds"] == 0

    created = await http.post(
        "/graphql",
        headers={"X-Request-ID": "lag-probe-1"},
        json={
            "query": "mutation($input: CreateLocationInput!) { createLocation(input: $input) {"
                     " __typename ... on LocationPayload { position } } }",
            "variables": {"input": {"id": 1, "streetAddress": "1 Main St", "city": "Springfield",
                                    "state": "IL", "postalCode": "62701"}},
        },
    )
    assert created.json()["data"]["createLocation"]["__typename"] == "LocationPayload"

    deadline = time.monotonic() + WAIT_SECONDS  # the head is announced just after the append
    while (now := samples((await http.get("/metrics")).text))["cqrs_projection_lag_events"] < 1:
        assert time.monotonic() < deadline, "the lag never showed the unprojected append"
        await asyncio.sleep(0.05)
    assert now["cqrs_projection_lag_events"] == 1
    assert now["cqrs_projection_lag_seconds"] > 0

    events = await http.post("/graphql", json={"query": "{ events { correlationId actor } }"})
    assert events.json()["data"]["events"] == [{"correlationId": "lag-probe-1", "actor": None}]


async def test_the_projector_logs_each_command_under_its_correlation_id_and_counts_batches(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_server(
        tmp_path_factory.mktemp("projector-log"), extra_env={"LOG_LEVEL": "DEBUG"}
    ) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
            created = await client.post(
                "/graphql",
                headers={"X-Request-ID": "projector-probe-7"},
                json={"query": 'mutation { createLocation(input: {streetAddress: "1 Main", '
                               'city: "X", state: "Y", postalCode: "1"}) { __typename } }'},
            )
            assert created.json()["data"]["createLocation"]["__typename"] == "LocationPayload"
            # the payload waits for the batch's commit; the projector counts it just after
            async with asyncio.timeout(10):
                while True:
                    metrics = samples((await client.get("/metrics")).text)
                    if metrics.get("cqrs_projection_batch_events_count", 0) >= 1:
                        break
                    await asyncio.sleep(0.05)
        assert metrics["cqrs_projection_batch_events_count"] >= 1
        logged = [
            json.loads(line) for line in server.log_path.read_text().splitlines()
            if line.startswith("{") and "projected the command ending at" in line
        ]
        assert {"message": "projected the command ending at 1",
                "correlation_id": "projector-probe-7"}.items() <= logged[0].items()
