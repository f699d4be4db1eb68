"""Subscription fan-out: commit-to-delivery latency, memory per idle subscriber, loop stalls.

One API process (with its projector); N websocket subscribers (graphql-transport-ws), each on
`employeeChanged(locationId: L)` for one of the locations (a restaurant screen watching its own
staff), or with --all on every change; a driver commits `changeEmployeeJobTitle` at a fixed rate.
The subscribers are spread over --clients processes (one Python process cannot read 10 000
messages a second beside the server on a small machine).

- Deliveries: every subscriber counts the changes of its location it received, exactly.
- Latency = time a client received the change − the event's `recorded_at` (the commit time),
  same clock; beside it, how long after its commit each mutation was answered (it waits for its
  projection, the path up to the fan-out).
- Memory = the server's RSS growth with N idle subscriptions, divided by N.
- CPU = the server's CPU time during the changes (its mutations and projector too), per delivery
  and as a share of one core: subscribers per vCPU at this rate.
- Stalls = the slowest `/healthz` answer while the changes fan out: how long the server's
  event loop (which also renews the projector's lease) waited.

    python -m bench.subscriptions                     # 1000 subscribers, 20 changes/s, 20 s
    python -m bench.subscriptions --subscribers 10000 --clients 4 --seconds 30
    python -m bench.subscriptions --subscribers 50 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import resource
import statistics
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.typing import Subprotocol

from bench.server import Server, running

LOCATIONS = 20
OPENING = 32
"""Subscribers of a client process opening at the same time."""
DRAIN_SECONDS = 60.0
"""How long deliveries may lag behind the last change before the rest count as missing."""
EMPLOYEES = LOCATIONS * 5
HIRE = """mutation($l: Int!, $n: String!) { createEmployee(input: {firstName: $n, lastName: "B",
  dateOfBirth: "1990-01-01", jobTitle: "Cook", locationId: $l}) { __typename } }"""
PLACE = """mutation { createLocation(input: {streetAddress: "1 Main", city: "Town", state: "ST",
  postalCode: "00001"}) { __typename } }"""
RETITLE = """mutation($e: Int!, $t: String!) { changeEmployeeJobTitle(input: {employeeId: $e,
  jobTitle: $t}) { ... on EmployeePayload { employee { updatedAt } } } }"""
WATCH = ("subscription($l: Int) { employeeChanged(locationId: $l) "
         "{ position employee { updatedAt } } }")


def location_of(employee: int) -> int:
    """Where `seed` hired employee number `employee` (ids count from 1)."""
    return 1 + (employee - 1) % LOCATIONS


class Tally:
    """What one client process's subscribers received."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.received: list[tuple[int | None, list[int]]] = []
        """(watched location, positions received) per subscriber."""
        self.failures: list[str] = []
        self.connected = 0

    def check_in(self, ready: asyncio.Event, count: int) -> None:
        """Ready once every subscriber has subscribed or failed."""
        if self.connected + len(self.failures) >= count:
            ready.set()


async def subscriber(url: str, location: int | None, tally: Tally, ready: asyncio.Event,
                     count: int, opening: asyncio.Semaphore) -> None:
    positions: list[int] = []
    tally.received.append((location, positions))
    try:
        async with opening:  # a connection storm would overflow the server's listen backlog
            ws = await websockets.connect(
                url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=120,
                compression=None, ping_interval=None,
            )
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": WATCH, "variables": {"l": location}}}))
        async with ws:
            tally.connected += 1
            tally.check_in(ready, count)
            async for raw in ws:
                received = dt.datetime.now(dt.UTC)
                message = json.loads(raw)
                if message["type"] == "next":
                    change = message["payload"]["data"]["employeeChanged"]
                    committed = dt.datetime.fromisoformat(change["employee"]["updatedAt"])
                    tally.latencies.append((received - committed).total_seconds() * 1000)
                    positions.append(change["position"])
                else:
                    raise RuntimeError(f"subscription ended: {message}")
    except Exception as error:  # counted and reported: the run goes on
        tally.failures.append(repr(error))
        tally.check_in(ready, count)


async def client(url: str, locations: list[int | None], pipe: Connection) -> None:
    """Subscribe, say ready, receive until told to stop, send the tally back."""
    tally, ready = Tally(), asyncio.Event()
    opening = asyncio.Semaphore(OPENING)
    tasks = []
    for location in locations:
        tasks.append(asyncio.create_task(
            subscriber(url, location, tally, ready, len(locations), opening)))
    await ready.wait()
    pipe.send(("ready", tally.connected))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    pipe.send((tally.latencies, tally.received, tally.failures))


def client_process(url: str, locations: list[int | None], pipe: Connection) -> None:
    raise_open_files(len(locations) + 100)
    asyncio.run(client(url, locations, pipe))


def raise_open_files(needed: int) -> None:
    """One file per socket: raise the soft limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def seed(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(LOCATIONS):
        await client.post(url, json={"query": PLACE})
    for n in range(EMPLOYEES):
        await client.post(
            url, json={"query": HIRE, "variables": {"l": location_of(n + 1), "n": f"E{n}"}}
        )


async def drive(client: httpx.AsyncClient, url: str, rate: float, seconds: float
                ) -> tuple[list[int], list[float]]:
    """Commit at `rate` per second, each mutation on its own schedule; the employees changed,
    in order, and how long after its commit each mutation was answered (ms): it waits for its
    projection, so this is the path up to the fan-out."""
    started = time.perf_counter()
    pending = []
    changed = []

    async def retitle(employee: int, title: str) -> float:
        response = await client.post(
            url, json={"query": RETITLE, "variables": {"e": employee, "t": title}})
        answered = dt.datetime.now(dt.UTC)
        assert response.status_code == 200 and "errors" not in response.json()
        employee_doc = response.json()["data"]["changeEmployeeJobTitle"]["employee"]
        committed = dt.datetime.fromisoformat(employee_doc["updatedAt"])
        return (answered - committed).total_seconds() * 1000

    for sent in range(1, int(rate * seconds) + 1):
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        employee = 1 + sent % EMPLOYEES
        changed.append(employee)
        pending.append(asyncio.create_task(retitle(employee, f"T{sent}")))
    return changed, sorted(await asyncio.gather(*pending))


async def probe(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> list[float]:
    """/healthz answer times (ms), every 50 ms until `stop`."""
    times = []
    while not stop.is_set():
        started = time.perf_counter()
        await client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return times


async def drain(probes: Tally, changes: int, seconds: float) -> float:
    """Until the driver's subscribers (one per location: one delivery per change) got every
    change, at most `seconds`: late deliveries are counted late, not missing. How long it took."""
    started = time.perf_counter()
    # polled: the subscribers append to the tally with no event to wait on
    while len(probes.latencies) < changes and time.perf_counter() - started < seconds:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


def cpu_seconds(server: Server) -> float:
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(count: int, rate: float, seconds: float, everything: bool, clients: int) -> None:
    raise_open_files(count + 1000)
    with running() as server:
        asyncio.run(run(server, count, rate, seconds, everything, clients))


async def run(server: Server, count: int, rate: float, seconds: float, everything: bool,
              clients: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    watched = [None if everything else 1 + n % LOCATIONS for n in range(count)]
    async with httpx.AsyncClient(timeout=60) as client:
        await seed(client, server.url)
        idle_before = server.rss_kib()
        pipes, processes = [], []
        for k in range(clients):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(
                target=client_process, args=(server.ws_url, watched[k::clients], theirs)
            )
            process.start()
            pipes.append(ours)
            processes.append(process)
        loop = asyncio.get_running_loop()
        connected = sum([(await loop.run_in_executor(None, pipe.recv))[1] for pipe in pipes])
        await asyncio.sleep(2)
        idle_after = server.rss_kib()
        # One subscriber per location here, joining last (so served last by each fan-out), in a
        # process with little else to do: the server's part of the latency, without the
        # clients' queueing when their processes wait for a CPU.
        probes, probed, opening = Tally(), asyncio.Event(), asyncio.Semaphore(OPENING)
        probing_tasks = [asyncio.create_task(subscriber(
            server.ws_url, location, probes, probed, LOCATIONS, opening))
            for location in range(1, LOCATIONS + 1)]
        await probed.wait()
        stop = asyncio.Event()
        probing = asyncio.create_task(probe(client, server.url.replace("/graphql", "/healthz"),
                                            stop))
        cpu_before, started = cpu_seconds(server), time.perf_counter()
        changed, answered = await drive(client, server.url, rate, seconds)
        drained = await drain(probes, len(changed), DRAIN_SECONDS)
        await asyncio.sleep(2)
        cpu = cpu_seconds(server) - cpu_before
        busy = cpu / (time.perf_counter() - started)
        stop.set()
        stalls = sorted(await probing)
        for task in probing_tasks:
            task.cancel()
        await asyncio.gather(*probing_tasks, return_exceptions=True)
        for pipe in pipes:
            pipe.send("stop")
        results = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        for process in processes:
            process.join(30)
    report(count, connected, rate, seconds, everything, clients, changed, results, cpu, busy,
           stalls, idle_before, idle_after)
    print(f"  commit→mutation answered (it waits for its projection): {percentiles(answered)}; "
          f"the driver's subscribers had every change {drained:.1f} s after the last answer")
    if probes.latencies:
        print(f"  and {len(probes.latencies)} deliveries to {LOCATIONS} subscribers in the driver "
              f"process, joined last: {percentiles(sorted(probes.latencies))}")


def report(count: int, connected: int, rate: float, seconds: float, everything: bool,
           clients: int, changed: list[int], results: list[Any], cpu: float, busy: float,
           stalls: list[float], idle_before: int, idle_after: int) -> None:
    per_location = Counter(location_of(employee) for employee in changed)
    latencies = sorted(x for result in results for x in result[0])
    missing = doubled = 0
    for result in results:
        for location, positions in result[1]:
            expected = len(changed) if location is None else per_location[location]
            distinct = len(set(positions))
            missing += max(0, expected - distinct)
            doubled += len(positions) - distinct
    failures = [failure for result in results for failure in result[2]]
    watched = "all changes" if everything else f"one location of {LOCATIONS} each"
    print(f"subscribers {count} ({watched}) over {clients} client process(es), {connected} "
          f"connected; {rate:g} changes/s for {seconds:g} s: {len(changed)} changes, "
          f"{len(latencies)} deliveries, {missing} missing, {doubled} doubled, "
          f"{len(failures)} subscriptions failed {failures[:3] if failures else ''}")
    if latencies:
        print(f"commit→delivery latency: {percentiles(latencies)} (goal p99 ≤ 250 ms)")
        print(f"server CPU (its mutations and projector included): {cpu:.2f} s for "
              f"{len(latencies)} deliveries = {cpu / len(latencies) * 1e6:.0f} µs per delivery; "
              f"{busy:.0%} of one core, ≈ {count / busy:,.0f} subscribers per vCPU at this rate")
    if stalls:
        print(f"/healthz during the fan-out: p50 {statistics.median(stalls):.1f} ms, "
              f"max {stalls[-1]:.0f} ms ({len(stalls)} probes)")
    per = (idle_after - idle_before) / count
    print(f"server RSS per idle subscriber: {per:.1f} KiB (goal ≤ 40 KiB); "
          f"RSS {idle_before / 1024:.0f} → {idle_after / 1024:.0f} MiB")


def percentiles(latencies: list[float]) -> str:
    """p50, p99 and max of sorted latencies (ms)."""
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return (f"p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, "
            f"max {latencies[-1]:.0f} ms")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--all", action="store_true", help="every subscriber watches every change")
    args: Any = parser.parse_args()
    main(args.subscribers, args.rate, args.seconds, args.all, args.clients)


if __name__ == "__main__":
    cli()
