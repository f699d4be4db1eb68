"""The read side on more than one Redis node, with real redis-server processes
(tests/harness/replication.py) and the service started as operators start it.

1. A replica in REDIS_READ_URL serves list and time-travel queries (its INFO commandstats count
   them, the primary's barely move), while payloads and `minPosition` reads show their writes.
2. A replica kept 200 ms behind by a proxy never answers early: payloads, reads after them,
   `minPosition` reads from another process and time travel all show the write; a subscription
   gets every change once; an erasure answered by a process reading the primary is already on
   the replica.
3. Three Sentinels and the primary killed in the middle of a mutation load: the service follows
   the new primary, every answered mutation is stored once, the `events` subscription has every
   event exactly once, and the read model equals a fresh projection of the store, key for key.
4. /readyz tells the truth: 503 against a Redis Cluster (MOVED), a replica given as REDIS_URL
   (READONLY) and over READY_MAX_LAG_EVENTS; the log says why, once; 200 under an ACL that
   denies the INFO and ROLE it would also use.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from app.domain.schema import default_schema
from app.event_store import open_store
from app.read_model.layout import Keys
from tests.harness.cluster import (
    MutationClient,
    Outcome,
    RedisServer,
    check_mutations_against_store,
    log_messages,
    server_log,
    until,
)
from tests.harness.projection_support import delete_all, dump, project_fully
from tests.harness.replication import (
    SERVICE,
    DelayProxy,
    Sentinels,
    command_calls,
    kill,
    reset_stats,
    start_primary,
    start_replica,
    stopping,
    sync_client,
)
from tests.harness.server import free_port, running_server
from tests.harness.ws_support import EMPLOYEE_CHANGED, EVENTS_FEED, Api, open_api, subscribe

EMPLOYEE_AT = """
query Employee($id: Int!, $at: Int, $min: Int) {
  employee(id: $id, atPosition: $at, minPosition: $min) { id jobTitle locationId }
}"""
LISTS = """
query Lists($at: Int) {
  locations(atPosition: $at) { id employeeCount }
  employees(first: 50, atPosition: $at) { totalCount edges { node { id jobTitle } } }
}"""
FORGET = """
mutation Forget($input: ForgetEmployeeInput!) {
  forgetEmployee(input: $input) { ... on ForgetEmployeePayload { employeeId position } }
}"""
PERSONAL_AT = """
query Personal($id: Int!, $at: Int) {
  employee(id: $id, atPosition: $at) { firstName lastName jobTitle }
}"""
READS = ("mget", "zrange", "zrangebyscore", "zrevrangebyscore", "zcard")  # what queries send


async def employee(api: Api, employee_id: int, at: int | None = None,
                   min_position: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = (await api.run(EMPLOYEE_AT, id=employee_id, at=at,
                                           min=min_position))["employee"]
    return found


# 1. A replica serves the reads.


async def test_a_replica_serves_list_and_time_travel_queries_and_writes_stay_fresh(
    tmp_path: Path,
) -> None:
    primary = start_primary(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary)
    env = {"REDIS_READ_URL": replica.url}
    with stopping(replica, primary), running_server(tmp_path / "api", primary.url, env) as server:
        async with open_api(server.base_url) as api:
            for location_id in (1, 2, 3):
                await api.create_location(location_id)
            for employee_id in range(1, 21):
                made = await api.create_employee(employee_id, 1 + employee_id % 3)
                assert made["employee"]["locationId"] == 1 + employee_id % 3
            middle = (await api.change_title(5, "Sous Chef"))["position"]
            last = (await api.change_title(5, "Head Chef"))["position"]

            reset_stats(primary.port, replica.port)
            for _ in range(30):
                now = await api.run(LISTS, at=None)
                then = await api.run(LISTS, at=middle)
            before_primary = command_calls(primary.port)
            on_replica = command_calls(replica.port)
            titles = {e["node"]["id"]: e["node"]["jobTitle"] for e in now["employees"]["edges"]}
            assert titles[5] == "Head Chef" and now["employees"]["totalCount"] == 20
            titles = {e["node"]["id"]: e["node"]["jobTitle"] for e in then["employees"]["edges"]}
            assert titles[5] == "Sous Chef"  # time travel is exact on the replica
            assert sorted(loc["employeeCount"] for loc in now["locations"]) == [6, 7, 7]

            replica_reads = sum(on_replica.get(name, 0) for name in READS)
            primary_reads = sum(before_primary.get(name, 0) for name in READS)
            print(f"\n60 list queries: replica {replica_reads} read commands "
                  f"({on_replica}), primary {primary_reads} ({before_primary})")
            assert on_replica.get("evalsha", 0) >= 30  # each time-travel list: one LATEST_AT
            assert on_replica.get("zrangebyscore", 0) >= 60
            assert primary_reads <= max(replica_reads // 20, 2), (before_primary, on_replica)

            # writes stay fresh through the replica: the payload and a minPosition read
            for n in range(10):
                changed = await api.change_title(7, f"Title {n}")
                assert changed["employee"]["jobTitle"] == f"Title {n}"
                read = await employee(api, 7, min_position=changed["position"])
                assert read["jobTitle"] == f"Title {n}"
            assert (await employee(api, 5, at=last))["jobTitle"] == "Head Chef"
            response = await api.http.get("/readyz")
            assert (response.status_code, response.json()) == (
                200, {"ready": True, "event_store": True, "redis": True})


# 2. A replica 200 ms behind.


async def test_a_replica_200_ms_behind_never_answers_early(tmp_path: Path) -> None:
    primary = start_primary(tmp_path / "primary")
    with stopping(primary), DelayProxy(primary.port, delay=0.2) as proxy:
        replica = start_replica(tmp_path / "replica", primary, via_port=proxy.port)
        with stopping(replica):
            behind = 0
            with sync_client(primary.port) as on_primary, sync_client(replica.port) as on_replica:
                for n in range(5):  # the set-up really delays: the replica misses a fresh write
                    on_primary.set(f"probe:{n}", n)
                    behind += on_replica.get(f"probe:{n}") is None
            assert behind > 0, "the proxy did not delay replication"
            await _never_early(tmp_path, primary, replica)


async def _never_early(tmp_path: Path, primary: RedisServer, replica: RedisServer) -> None:
    shared = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"}  # one store
    env = {**shared, "REDIS_READ_URL": replica.url}
    with running_server(tmp_path / "api", primary.url, env) as server, \
            running_server(tmp_path / "reader", primary.url, env, ["--no-projector"]) as reader:
        async with open_api(server.base_url) as api, open_api(reader.base_url) as other:
            await _reads_after_writes(api, other, server.ws_url)
        # an erasure answered by a process reading the primary is on the replica already
        with running_server(tmp_path / "writer", primary.url, shared,
                            ["--no-projector"]) as writer:
            async with open_api(writer.base_url) as writing, open_api(reader.base_url) as other:
                forgotten = (await writing.run(FORGET, input={"employeeId": 1}))["forgetEmployee"]
                position = forgotten["position"]
                with sync_client(replica.port) as on_replica:
                    pointer = on_replica.get(Keys("cqrs").generation_pointer)
                    raw = on_replica.get(Keys("cqrs").at(int(str(pointer))).employee(1))
                doc = json.loads(str(raw))
                assert (doc["first_name"], doc["last_name"]) == (None, None), doc
                erased = (await other.run(PERSONAL_AT, id=1, at=position))["employee"]
                assert erased == {"firstName": None, "lastName": None, "jobTitle": "Cook 30"}


async def _reads_after_writes(api: Api, other: Api, ws_url: str) -> None:
    """30 title changes through `api`; each shows at once in its payload, in a read after it,
    in `other`'s minPosition read and in time travel; a subscription gets each once."""
    await api.create_location(1)
    made = await api.create_employee(1, 1, job_title="Cook 0")
    async with subscribe(ws_url, EMPLOYEE_CHANGED, "employeeChanged", id=1) as feed:
        await api.wait_subscribers(1)
        positions, previous = [], made["position"]
        for n in range(1, 31):
            title = f"Cook {n}"
            changed = await api.change_title(1, title)
            position = changed["position"]
            positions.append(position)
            assert changed["employee"]["jobTitle"] == title  # the payload shows it
            assert (await employee(api, 1))["jobTitle"] == title  # so does a read after
            seen = await employee(other, 1, min_position=position)  # another process
            assert seen["jobTitle"] == title
            assert (await employee(other, 1, at=position))["jobTitle"] == title
            assert (await employee(other, 1, at=previous))["jobTitle"] == f"Cook {n - 1}"
            previous = position
        await feed.wait_position(positions[-1])
        assert [item["position"] for item in feed.items] == positions  # once each
        assert [item["employee"]["jobTitle"] for item in feed.items] == [
            f"Cook {n}" for n in range(1, 31)]


# 3. A Sentinel failover under load.


async def test_a_sentinel_failover_under_mutation_load_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    primary = start_primary(tmp_path / "primary")
    replicas = [start_replica(tmp_path / f"replica-{n}", primary) for n in range(2)]
    sentinels = Sentinels(tmp_path, primary)
    with stopping(primary, *replicas, *sentinels.servers):
        sentinels.start(replicas=2)
        env = {"REDIS_SENTINELS": sentinels.spec, "REDIS_SENTINEL_SERVICE": SERVICE}
        with running_server(tmp_path / "api", None, env) as server:
            async with _events_feed(server.ws_url) as events:
                outcomes, pause = await _load_across_failover(server.base_url, primary, sentinels)
                new_port = sentinels.primary_port()
                assert new_port in {r.port for r in replicas}, "Sentinel did not fail over"
                store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'api' / 'events.db'}",
                                         default_schema())
                try:
                    stored = [_row(e) for e in await store.read_all(0, 1_000_000)]
                    counts = check_mutations_against_store(outcomes, stored)
                    head = await store.head_position()
                    await events.wait_position(head, seconds=60.0)
                    assert [e["position"] for e in events.items] == list(range(1, head + 1))
                    async with _client(new_port) as redis:
                        await _equals_fresh_projection(redis, store, head, server_log(server))
                finally:
                    await store.close()
        failovers = [m for m in log_messages(server_log(server)) if "reads move" in m]
        print(f"\nfailover: {counts['succeeded']} mutations answered, {counts['failed']} "
              f"failed, {head} events; longest pause between answers around the kill: "
              f"{pause:.2f} s; {failovers}")
        assert counts["failed"] == 0, "a mutation failed across the failover"


@asynccontextmanager
async def _events_feed(ws_url: str) -> AsyncIterator[Any]:
    async with subscribe(ws_url, EVENTS_FEED, "events", after=0) as feed:
        yield feed


async def _load_across_failover(
    base_url: str, primary: RedisServer, sentinels: Sentinels
) -> tuple[list[Outcome], float]:
    """Four writers hiring, moving and retitling; the primary is killed once 40 mutations were
    answered, and the load goes on until 40 more were answered after Sentinel named another.
    Returns the outcomes and the longest time no mutation was answered, around the kill."""
    outcomes: list[Outcome] = []
    clients = [MutationClient(base_url, outcomes) for _ in range(4)]
    killed: list[float] = []
    after_failover: list[float] = []
    try:
        for location_id in (1, 2, 3):
            assert (await clients[0].create_location(location_id)).succeeded

        async def writer(n: int) -> None:
            client, employee_id = clients[n], 1000 * (n + 1)
            while len(after_failover) < 40:
                employee_id += 1
                made = await client.create_employee(employee_id, 1 + employee_id % 3)
                moved = await client.move(employee_id, 1 + (employee_id + 1) % 3)
                retitled = await client.retitle(employee_id, f"Chef {employee_id}")
                for outcome in (made, moved, retitled):
                    if killed and outcome.started > killed[0] and outcome.succeeded:
                        after_failover.append(outcome.ended)
                if retitled.succeeded:
                    assert retitled.payload is not None
                    assert retitled.payload["employee"]["jobTitle"] == f"Chef {employee_id}"

        async def failover() -> None:
            await until(lambda: sum(o.succeeded for o in outcomes) >= 40, "40 mutations", 60.0)
            kill(primary)
            killed.append(time.monotonic())

        await asyncio.wait_for(asyncio.gather(failover(), *(writer(n) for n in range(4))),
                               timeout=180.0)
    finally:
        for client in clients:
            await client.aclose()
    ends = sorted(o.ended for o in outcomes if o.succeeded)
    around = [b - a for a, b in itertools.pairwise(ends) if b > killed[0] - 1.0]
    return outcomes, max(around, default=0.0)


def _row(event: Any) -> dict[str, Any]:
    return {"position": event.position, "correlation_id": event.metadata.get("correlation_id")}


@asynccontextmanager
async def _client(port: int) -> AsyncIterator[Redis]:
    redis = Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        yield redis
    finally:
        await redis.aclose()


async def _equals_fresh_projection(redis: Redis, store: Any, head: int, log: str) -> None:
    """The live generation, once at the store's head, equals a fresh projection, key for key."""
    base = Keys("cqrs")

    async def caught_up() -> int | None:
        pointer = await redis.get(base.generation_pointer)
        if pointer is None:
            return None
        at = int(await redis.get(base.at(int(pointer)).checkpoint) or 0)
        return int(pointer) if at == head and not await redis.exists(base.rebuilding) else None

    generation = await until(caught_up, f"the read model at {head}", 60.0,
                             context=lambda: log[-3000:])
    live = await dump(redis, base.at(generation))
    reference = Keys(f"reference-{uuid.uuid4().hex[:8]}")
    try:
        await project_fully(store, redis, reference)
        expected = await dump(redis, reference)
    finally:
        await delete_all(redis, reference)
    assert live.get("checkpoint") == ("string", head)
    differing = sorted(k for k in set(live) | set(expected) if live.get(k) != expected.get(k))
    assert not differing, f"{len(differing)} keys differ from a fresh projection: {differing[:10]}"


# 4. Readiness.


async def test_readyz_is_503_against_a_cluster_a_read_only_primary_and_too_much_lag(
    tmp_path: Path,
) -> None:
    nodes = _cluster_nodes(tmp_path)
    with stopping(*(node for node, _bus in nodes)):
        _form_cluster(nodes)
        with running_server(tmp_path / "cluster-api", nodes[0][0].url, ready=False) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
                body = await _not_ready(http)
                assert "Redis Cluster" in " ".join(body["reasons"]), body
                query = await http.post("/graphql", json={"query": "{ locations { id } }"})
                assert query.json()["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
            await until(lambda: _errors_about(server_log(server), "Redis Cluster"),
                        "an ERROR naming the cluster", 30.0)
            # once per component and state, not once per retry
            assert len(_errors_about(server_log(server), "Redis Cluster")) <= 4, \
                server_log(server)[-3000:]

    primary = start_primary(tmp_path / "primary")
    replica = start_replica(tmp_path / "replica", primary)
    with stopping(replica, primary):
        with running_server(tmp_path / "replica-api", replica.url, ready=False) as server:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
                body = await _not_ready(http)
                assert "refuses writes" in " ".join(body["reasons"]), body
            await until(lambda: _errors_about(server_log(server), "REDIS_URL names a replica"),
                        "an ERROR naming the replica", 30.0)

        # an ACL user denied INFO and ROLE: those checks are left out, the rest still holds
        with sync_client(primary.port) as client:
            client.acl_setuser("cqrs", enabled=True, passwords=["+secret"], keys=["*"],
                               channels=["*"], commands=["+@all", "-info", "-role"])
        restricted = f"redis://cqrs:secret@127.0.0.1:{primary.port}/0"
        lagging = {"READY_MAX_LAG_EVENTS": "2", "READ_MODEL_WAIT_SECONDS": "0.1"}
        with running_server(tmp_path / "lag-api", restricted, lagging, ["--no-projector"],
                            ready=False) as server:
            async with open_api(server.base_url) as api:
                await until(lambda: _status(api.http, 200), "ready with no lag", 30.0)
                for location_id in (1, 2, 3):  # nothing projects: the read model lags
                    await api.create_location(location_id)
                body = await _not_ready(api.http)
                assert "3 events behind" in " ".join(body["reasons"]), body


async def _not_ready(http: httpx.AsyncClient) -> dict[str, Any]:
    async def answered() -> dict[str, Any] | None:
        response = await http.get("/readyz")
        body: dict[str, Any] = response.json()
        return body if response.status_code == 503 and body.get("reasons") else None

    found: dict[str, Any] = await until(answered, "/readyz 503", 30.0)
    assert found["ready"] is False and found["event_store"] is True and found["redis"] is False
    return found


async def _status(http: httpx.AsyncClient, status: int) -> bool:
    return (await http.get("/readyz")).status_code == status


def _errors_about(log: str, text: str) -> list[str]:
    found = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") in ("error", "ERROR") and text in str(record.get("message")):
            found.append(str(record.get("message")))
    return found


def _cluster_nodes(tmp_path: Path) -> list[tuple[RedisServer, int]]:
    """Three cluster-enabled nodes (not started yet), each with its cluster bus port."""
    nodes = []
    for n in range(3):
        bus = free_port()  # (not port + 10000, which may be past 65535)
        node = RedisServer(tmp_path / f"node-{n}", args=[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(bus),
        ])
        nodes.append((node, bus))
    return nodes


def _form_cluster(nodes: list[tuple[RedisServer, int]]) -> None:
    """Started as three masters, a third of the slots each, met and agreeing."""
    for node, _bus in nodes:
        node.start()
    share = 16384 // len(nodes)
    for n, (node, _bus) in enumerate(nodes):
        last = 16383 if n == len(nodes) - 1 else (n + 1) * share - 1
        with sync_client(node.port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * share, last)
            for other, bus in nodes:
                if other is not node:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, bus)
    deadline = time.monotonic() + 30.0
    for node, _bus in nodes:
        with sync_client(node.port) as client:
            while client.cluster("INFO")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster did not form"
                time.sleep(0.1)  # polling interval while the nodes gossip
