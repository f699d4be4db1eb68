"""/metrics against the real service: the projection lag, requests counted at the edge, and the
figures of `serve --workers 2` summed over both workers.

`serve --no-projector` appends events that nobody projects, so the lag (in events and in
seconds) is known; the request id a client sends is the correlation id of the events it caused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.harness.server import RunningServer, running_server
from tests.harness.ws_support import raw_connect

WAIT_SECONDS = 15.0
ERRORS_IN_LOG = ('"level": "ERROR"', "Exception in ASGI application", "Traceback")
GRAPHQL_OK = 'cqrs_http_requests_total{method="POST",path_kind="graphql",status="200"}'


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


async def test_the_edge_counts_requests_by_method_kind_of_path_and_status(
    http: httpx.AsyncClient,
) -> None:
    before = samples((await http.get("/metrics")).text)
    assert (await http.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/no/such/page")).status_code == 404
    assert (await http.request("PROPFIND", "/healthz")).status_code == 405
    refused = await http.post("/graphql", json={"query": "{ __typename }"},
                              headers={"Host": "elsewhere.example"})
    assert refused.status_code == 400
    too_large = await http.post("/graphql", content=b"x" * (2 * 1024 * 1024),
                                headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413
    after = samples((await http.get("/metrics")).text)

    def counted(method: str, kind: str, status: str) -> float:
        name = (f'cqrs_http_requests_total{{method="{method}",path_kind="{kind}",'
                f'status="{status}"}}')
        return after.get(name, 0) - before.get(name, 0)

    assert counted("POST", "graphql", "200") == 1
    assert counted("GET", "healthz", "200") == 1
    assert counted("GET", "other", "404") == 1  # a path's kind, never the path itself
    assert counted("other", "healthz", "405") == 1  # a method outside the usual few is "other"
    assert counted("POST", "graphql", "400") == 1  # refused for its host, before anything
    assert counted("POST", "graphql", "413") == 1
    assert counted("GET", "metrics", "200") == 1  # the first scrape; the second not yet


def worker_counts(metrics_dir: Path, sample: str) -> dict[str, float]:
    """`sample` as each worker's own file holds it, by pid (the files prometheus-client writes
    under PROMETHEUS_MULTIPROC_DIR): which workers served the requests."""
    counts = {}
    for file in metrics_dir.glob("counter_*.db"):
        for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(file)):
            _metric, name, labels, _help = json.loads(key)
            rendered = ",".join(f'{label}="{labels[label]}"' for label in sorted(labels))
            if f"{name}{{{rendered}}}" == sample:
                counts[file.stem.removeprefix("counter_")] = value
    return counts


async def test_under_two_workers_every_scrape_shows_the_sum_of_both(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work_dir = tmp_path_factory.mktemp("workers")
    metrics_dir = work_dir / "var" / "metrics"
    metrics_dir.mkdir(parents=True)
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")
    with running_server(work_dir, extra_args=["--workers", "2"]) as server:
        assert not (metrics_dir / "counter_1.db").exists(), "serve did not empty the directory"

        async def one(client: httpx.AsyncClient) -> None:
            response = await client.post("/graphql", json={"query": "{ __typename }"})
            assert response.json() == {"data": {"__typename": "Query"}}

        # A new connection for every request (the kernel hands each to either worker), many at
        # once, until both workers have answered some.
        sent = 0
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0,
                                     limits=limits) as client:
            deadline = time.monotonic() + 2 * WAIT_SECONDS
            while len(worker_counts(metrics_dir, GRAPHQL_OK)) < 2:
                assert time.monotonic() < deadline, "one worker answered every request"
                await asyncio.gather(*(one(client) for _ in range(40)))
                sent += 40
            per_worker = worker_counts(metrics_dir, GRAPHQL_OK)
            assert sum(per_worker.values()) == sent
            assert all(0 < count < sent for count in per_worker.values())

            scrapes = [samples((await client.get("/metrics")).text) for _ in range(8)]
            assert [scrape[GRAPHQL_OK] for scrape in scrapes] == [sent] * len(scrapes)

            # A gauge: one open socket (held by one worker) is one in every scrape, then none.
            socket = await raw_connect(server.ws_url)
            try:
                scrapes = [samples((await client.get("/metrics")).text) for _ in range(8)]
            finally:
                await socket.close()
            assert [scrape["cqrs_websocket_connections"] for scrape in scrapes] == [1] * 8
            deadline = time.monotonic() + WAIT_SECONDS  # the server sees the close just after
            while samples((await client.get("/metrics")).text)[
                "cqrs_websocket_connections"
            ] != 0:
                assert time.monotonic() < deadline, "the closed socket is still counted"
                await asyncio.sleep(0.05)
    log = server.log_path.read_text()
    assert not [marker for marker in ERRORS_IN_LOG if marker in log], log[-3000:]
