"""Subscription fan-out: commit-to-delivery latency and memory per idle subscriber.

One API process (with its projector); N websocket subscribers (graphql-transport-ws), each on
`employeeChanged(locationId: L)` for one of the locations (a restaurant screen watching its own
staff), or with --all on every change; a driver commits `changeEmployeeJobTitle` at a fixed rate.
Latency = time a client received the change − the event's `recorded_at` (the commit time),
same clock. Memory = the server's RSS growth with N idle subscriptions, divided by N.

    python -m bench.subscriptions                     # 1000 subscribers, 20 changes/s, 20 s
    python -m bench.subscriptions --subscribers 50 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from bench.server import Server, running

LOCATIONS = 20
HIRE = """mutation($l: Int!, $n: String!) { createEmployee(input: {firstName: $n, lastName: "B",
  dateOfBirth: "1990-01-01", jobTitle: "Cook", locationId: $l}) { __typename } }"""
PLACE = """mutation { createLocation(input: {streetAddress: "1 Main", city: "Town", state: "ST",
  postalCode: "00001"}) { __typename } }"""
RETITLE = """mutation($e: Int!, $t: String!) { changeEmployeeJobTitle(input: {employeeId: $e,
  jobTitle: $t}) { __typename } }"""
WATCH = ("subscription($l: Int) { employeeChanged(locationId: $l) "
         "{ position employee { updatedAt } } }")


async def subscriber(url: str, location: int | None, latencies: list[float], ready: asyncio.Event,
                     counter: list[int]) -> None:
    async with websockets.connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": WATCH, "variables": {"l": location}}}))
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        async for raw in ws:
            received = dt.datetime.now(dt.UTC)
            message = json.loads(raw)
            if message["type"] == "next":
                employee = message["payload"]["data"]["employeeChanged"]["employee"]
                committed = dt.datetime.fromisoformat(employee["updatedAt"])
                latencies.append((received - committed).total_seconds() * 1000)
            elif message["type"] in ("error", "complete"):
                raise RuntimeError(f"subscription ended: {message}")


async def seed(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(LOCATIONS):
        await client.post(url, json={"query": PLACE})
    for n in range(LOCATIONS * 5):
        await client.post(
            url, json={"query": HIRE, "variables": {"l": 1 + n % LOCATIONS, "n": f"E{n}"}}
        )


async def drive(client: httpx.AsyncClient, url: str, rate: float, seconds: float) -> int:
    """Commit at `rate` per second, each mutation on its own schedule (they wait for projection)."""
    started = time.perf_counter()
    pending = []
    total = int(rate * seconds)
    for sent in range(1, total + 1):
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        variables = {"e": 1 + sent % (LOCATIONS * 5), "t": f"T{sent}"}
        pending.append(asyncio.create_task(
            client.post(url, json={"query": RETITLE, "variables": variables})))
    responses = await asyncio.gather(*pending)
    assert all(r.status_code == 200 for r in responses)
    return total


async def main(count: int, rate: float, seconds: float, everything: bool) -> None:
    with running() as server:
        await run(server, count, rate, seconds, everything)


async def run(server: Server, count: int, rate: float, seconds: float, everything: bool) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await seed(client, server.url)
        idle_before = server.rss_kib()
        latencies: list[float] = []
        ready, counter = asyncio.Event(), [0, count]
        tasks = [asyncio.create_task(subscriber(
            server.ws_url, None if everything else 1 + n % LOCATIONS, latencies, ready, counter))
            for n in range(count)]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(2)
        idle_after = server.rss_kib()
        sent = await drive(client, server.url, rate, seconds)
        await asyncio.sleep(2)
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    expected = sent * (count if everything else count // LOCATIONS)
    watched = "all changes" if everything else f"one location of {LOCATIONS} each"
    print(f"subscribers {count} ({watched}), "
          f"{rate:g} changes/s for {seconds:g} s: {sent} changes, {len(latencies)} deliveries "
          f"(expected ~{expected}), {len(failed)} subscriptions failed")
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"commit→delivery latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal p99 ≤ 250 ms)")
    per = (idle_after - idle_before) * 1024 / count
    print(f"server RSS per idle subscriber: {per / 1024:.1f} KiB (goal ≤ 50 KB); "
          f"RSS {idle_before / 1024:.0f} → {idle_after / 1024:.0f} MiB")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--all", action="store_true", help="every subscriber watches every change")
    args: Any = parser.parse_args()
    asyncio.run(main(args.subscribers, args.rate, args.seconds, args.all))


if __name__ == "__main__":
    cli()
