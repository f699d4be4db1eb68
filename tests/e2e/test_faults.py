"""Fault injection against a whole deployment in real processes (harness: tests/harness/cluster.py).

Each scenario runs on a private PostgreSQL cluster (shared by the module, a fresh database per
test) and a private redis-server (per test, no persistence), with `python -m app project`
workers and `serve` API processes, and breaks something while load runs:

1. kill -9 the active projector ten times under a 20 000-event load: a standby takes over
   within 5 s each time and the read model ends equal to a fresh rebuild;
2. restart Redis (it comes back empty) under mutation load: every mutation still commits,
   subscribers never silently miss changes, the read model is rebuilt by itself;
3. stop PostgreSQL under load: mutations answer STORE_UNAVAILABLE and write nothing, queries go
   on from Redis, and everything resumes once it is back;
4. FLUSHALL on Redis: the active projector notices, rebuilds, and queries are right again;
5. 20 clients moving 5 employees between 3 locations through 2 API replicas: every rule of
   the domain holds at the end and the read model equals a fresh rebuild.

"Equal to a fresh rebuild" is key for key: every key of the active generation against a
reference projection of the whole store into a separate prefix (`Cluster.assert_equals_fresh_
rebuild`). The whole file is sized to finish within 150 s on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.cluster import (
    Cluster,
    InProcessLoad,
    MutationClient,
    Outcome,
    PostgresCluster,
    check_mutations_against_store,
    error_codes,
    graphql,
    log_messages,
    open_cluster,
    server_log,
    timeline,
    until,
    wait_ready,
)
from tests.harness.ws_support import EMPLOYEE_CHANGED, open_api, subscribe

pytestmark = pytest.mark.postgres

TAKEOVER_SECONDS = 5.0  # the contract: a standby takes over within 5 s of the leader's death
LEASE_SECONDS = 3.0  # LEADER_LEASE_SECONDS, left at its default
SEED = int(os.environ.get("FAULT_SEED", "20261126"))
# Scenario 5's duration. The issue asks for 30 s, and the file fits its 150 s budget with it.
MOVE_SECONDS = float(os.environ.get("FAULT_MOVE_SECONDS", "30"))

STATUS = "{ projectionStatus { position headPosition lag rebuilding } }"
LOCATION_AT = "query ($id: Int!, $min: Int) { location(id: $id, minPosition: $min) { id } }"
READS = """
query ($location: Int!, $employee: Int!) {
  location(id: $location) { id city employeeCount employees { id locationId } }
  employee(id: $employee) { id locationId version }
  employees(locationId: $location, first: 100) { totalCount edges { node { id } } }
}"""
COMPANY = """
{
  locations { id version employeeCount employees { id locationId } }
  employees(first: 500) {
    totalCount edges { node { id locationId version location { id } } }
  }
}"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
async def cluster(postgres: PostgresCluster, tmp_path: Path) -> AsyncIterator[Cluster]:
    if not postgres.running:  # an earlier test stopped it and failed before starting it again
        postgres.start()
    async with open_cluster(tmp_path, postgres) as opened:
        yield opened


async def first_leader(cluster: Cluster) -> int:
    """Once a worker holds the lease and the read model has a generation: its pid."""
    async def ready() -> int | None:
        pid = await cluster.leader_pid()
        return pid if pid is not None and await cluster.generation() is not None else None

    pid: int = await until(ready, "a projector leader with a generation", 30.0,
                           context=cluster.logs)
    return pid


# 1. kill -9 the active projector, ten times, under load.


async def test_killing_the_active_projector_ten_times_under_load_loses_nothing(
    cluster: Cluster,
) -> None:
    kills, events = 10, 20_000
    rng = random.Random(SEED)
    for _ in range(3):
        cluster.start_worker()
    await first_leader(cluster)

    # Paced so that the 20 000 events span the ten kills (each waits out the dead lease).
    load = InProcessLoad(cluster, SEED, writers=8, rate=events / (kills * LEASE_SECONDS))
    kills_done = asyncio.Event()
    phases = {"start": time.monotonic()}
    loading = asyncio.create_task(
        load.run(lambda: kills_done.is_set() and load.position >= events)
    )
    victims, takeovers = [], []
    try:
        await until(lambda: _moved_past(cluster, 0), "a first projected batch", 15.0,
                    context=cluster.logs)
        for n in range(kills):
            await asyncio.sleep(rng.uniform(0.1, 1.0))  # a random moment of the load
            if loading.done():
                loading.result()  # the load failed: its error
                raise AssertionError("the load ended before the kills")
            victim = cluster.worker(await _leader(cluster))
            victim.kill()
            killed_at = time.monotonic()
            victims.append(victim)
            before = await cluster.checkpoint()
            cluster.start_worker()  # the victim comes back as a new standby

            async def new_holder(dead: int = victim.pid) -> int | None:
                pid = await cluster.leader_pid()
                return pid if pid is not None and pid != dead else None

            successor = await until(
                new_holder, f"takeover after kill {n + 1}", TAKEOVER_SECONDS, 0.02,
                context=cluster.logs)
            assert cluster.worker(successor).alive
            await until(functools.partial(_moved_past, cluster, before),
                        f"the checkpoint moving past {before} after kill {n + 1}",
                        max(TAKEOVER_SECONDS - (time.monotonic() - killed_at), 0.1), 0.02,
                        context=cluster.logs)
            takeovers.append(time.monotonic() - killed_at)
    finally:
        phases["kills"] = time.monotonic()
        kills_done.set()
        head = await loading
        phases["load"] = time.monotonic()

    assert head >= events and await cluster.store.head_position() == head
    assert len(takeovers) == kills and max(takeovers) <= TAKEOVER_SECONDS, takeovers
    assert [v.process.returncode for v in victims] == [-9] * kills
    # Three workers are left (two standbys and the leader), every victim replaced.
    survivors = cluster.live_workers()
    assert len(survivors) == 3
    leader = cluster.worker(await _leader(cluster))
    assert leader in survivors
    for worker in (*victims, leader):
        assert any("projector lease acquired" in m for m in log_messages(worker.log_text())), (
            f"{worker.name} projected without logging that it holds the lease:\n"
            f"{worker.log_tail()}")
    for worker in survivors:
        if worker is not leader:
            messages = log_messages(worker.log_text())
            standing_by = "holds the projector lease and projects"
            assert any(standing_by in m for m in messages), worker.log_tail()
    live = await cluster.assert_equals_fresh_rebuild()
    assert live["checkpoint"] == ("string", head)
    phases["compared"] = time.monotonic()
    # `python -m app status` reports the same: caught up, this generation, this leader.
    status = await asyncio.to_thread(cluster.run_cli, "status")
    assert status.returncode == 0, status.stderr
    report = {name.strip(): value.strip() for name, value in (
        line.split(":", 1) for line in status.stdout.splitlines() if ":" in line)}
    expected = {
        "projected position": str(head), "event store head": str(head), "lag": "0",
        "generation": str(await cluster.generation()), "projector leader": await cluster.leader(),
    }
    assert {name: report.get(name) for name in expected} == expected, status.stdout
    steps = list(phases.items())
    print(f"\n{head} events; takeovers after each kill (s): "
          f"{', '.join(f'{t:.2f}' for t in takeovers)}; phases (s): "
          f"{', '.join(f'{b[0]} {b[1] - a[1]:.1f}' for a, b in itertools.pairwise(steps))}")


async def _leader(cluster: Cluster) -> int:
    pid: int = await until(cluster.leader_pid, "a projector leader", TAKEOVER_SECONDS,
                           context=cluster.logs)
    return pid


async def _moved_past(cluster: Cluster, position: int) -> bool:
    return await cluster.checkpoint() > position


async def seed_three_locations(
    base_url: str,
) -> tuple[list[Outcome], list[int], dict[int, int]]:
    """Locations 1-3 and employees 1-12 spread over them, through the API: (outcomes, places,
    staff); later mutations add their outcomes to the same list."""
    outcomes: list[Outcome] = []
    seeding = MutationClient(base_url, outcomes)
    places = [1, 2, 3]
    staff = {e: places[e % 3] for e in range(1, 13)}
    try:
        for place in places:
            assert (await seeding.create_location(place)).succeeded, outcomes[-1]
        for employee, place in staff.items():
            assert (await seeding.create_employee(employee, place)).succeeded, outcomes[-1]
    finally:
        await seeding.aclose()
    return outcomes, places, staff


# 2. Redis restarted (empty) during load.


async def test_a_redis_restart_during_load_loses_no_mutation_and_rebuilds_the_read_model(
    cluster: Cluster,
) -> None:
    cluster.settings.update({"READ_MODEL_WAIT_SECONDS": "2"})
    worker = cluster.start_worker()
    (api,) = await cluster.start_apis(1)
    await first_leader(cluster)
    outcomes, places, staff = await seed_three_locations(api.base_url)

    async with (
        open_api(api.base_url) as probe,
        subscribe(api.ws_url, EMPLOYEE_CHANGED, "employeeChanged") as feed,
    ):
        await probe.wait_subscribers(1)
        subscribed_after = max(o.position for o in outcomes)
        stop = asyncio.Event()
        clients = [MutationClient(api.base_url, outcomes) for _ in range(6)]
        load = [asyncio.create_task(_mutate_own_staff(client, n, staff, places, stop))
                for n, client in enumerate(clients)]
        try:
            await asyncio.sleep(1.0)
            await feed.wait_until(lambda f: bool(f.items), "a change before the restart")
            rebuilds_before = _rebuild_lines(cluster)
            down_at = time.monotonic()
            cluster.redis_server.stop()
            await asyncio.sleep(1.5)  # mutations go on while Redis is away
            cluster.redis_server.start()  # same port, and empty
            up_at = time.monotonic()
            await wait_ready(api.base_url)
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await asyncio.gather(*load)
            for client in clients:
                await client.aclose()

        # Every mutation answered a payload, also those sent while Redis was down.
        failed = [o for o in outcomes if not o.succeeded]
        assert not failed, [(o.mutation, o.status, o.error_codes, o.refusal, o.transport_error)
                            for o in failed[:5]]
        during = [o for o in outcomes if down_at <= o.started and o.ended <= up_at]
        assert during, "no mutation ran while Redis was down"
        after = [o for o in outcomes if o.started > up_at]
        assert after, "no mutation ran after the restart"
        counts = check_mutations_against_store(outcomes, await cluster.store_events())
        assert counts == {"succeeded": len(outcomes), "failed": 0}

        # Read your writes works again: the last mutation's position is reached.
        last = max(o.position for o in outcomes)

        async def reached() -> bool:
            body = await graphql(probe.http, LOCATION_AT, id=1, min=last)
            if body.get("errors"):
                assert set(error_codes(body)) <= {"STALE_READ_MODEL", "READ_MODEL_UNAVAILABLE"}, (
                    body)
                return False
            return bool(body["data"]["location"] == {"id": 1})

        await until(reached, f"a query with minPosition {last}", 30.0, 0.2, context=cluster.logs)

        # The subscriber either got an error or goes on receiving changes after the restart.
        first_after = min(o.position for o in after)
        await feed.wait_until(
            lambda f: f.error is not None or any(i["position"] >= first_after for i in f.items),
            "an error or a change made after the restart", 30.0,
        )
        if feed.error is not None:
            assert feed.error_codes == ["CHANGES_INTERRUPTED"], repr(feed.error)
        # Whatever it delivered (up to the error, if any) has no hole: never silently missing.
        stored = await cluster.store_events()
        seen = [(i["position"], i["employeeId"]) for i in feed.items
                if i["position"] > subscribed_after]
        expected = sorted({(e["commit_position"], e["data"]["employee_id"]) for e in stored
                           if e["stream_id"].startswith("employee-")
                           and seen[0][0] <= e["commit_position"] <= seen[-1][0]})
        assert seen == expected, "the change feed silently skipped changes"

    # Redis came back empty: the projector rebuilt the read model by itself, and it is right.
    assert worker.alive, worker.log_tail()
    await until(lambda: _rebuild_lines(cluster) > rebuilds_before,
                "a 'rebuilding' log line after the restart", 15.0, context=cluster.logs)
    await first_leader(cluster)
    await cluster.assert_equals_fresh_rebuild()
    print(f"\n{len(outcomes)} mutations, {len(during)} while Redis was down; the subscriber "
          f"{'ended with ' + repr(feed.error_codes) if feed.error else 'saw every change'}")


def _rebuild_lines(cluster: Cluster) -> int:
    texts = [w.log_text() for w in cluster.workers] + [server_log(s) for s in cluster.apis]
    return sum(1 for text in texts for m in log_messages(text) if "rebuilding" in m.lower())


async def _mutate_own_staff(
    client: MutationClient, n: int, staff: dict[int, int], places: list[int],
    stop: asyncio.Event,
) -> None:
    """Moves and retitles the employees `e` with e % 6 == n (no other client touches them),
    keeping `staff` up to date with what succeeded."""
    rng = random.Random(SEED + n)
    mine = sorted(e for e in staff if e % 6 == n)
    while not stop.is_set():
        employee = rng.choice(mine)
        if rng.random() < 0.6:
            to = rng.choice([p for p in places if p != staff[employee]])
            if (await client.move(employee, to)).succeeded:
                staff[employee] = to
        else:
            await client.retitle(employee, f"Title {rng.randrange(1000)}")
        await asyncio.sleep(0.01)


# 3. PostgreSQL stopped during load.


async def test_a_postgres_outage_refuses_mutations_cleanly_while_queries_go_on(
    cluster: Cluster,
) -> None:
    worker = cluster.start_worker()
    (api,) = await cluster.start_apis(1)
    await first_leader(cluster)
    outcomes, places, staff = await seed_three_locations(api.base_url)

    stop = asyncio.Event()
    reads: list[tuple[float, float, int, list[str]]] = []
    clients = [MutationClient(api.base_url, outcomes) for _ in range(6)]
    seeded = len(outcomes)
    down_at = up_at = ready_at = float("inf")

    def when() -> str:
        return (f"times relative to the stop of PostgreSQL; it was back at "
                f"{up_at - down_at:+.2f}, /readyz answered 200 at {ready_at - down_at:+.2f}")

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30.0) as http:
        load = [asyncio.create_task(_mutate_own_staff(client, n, staff, places, stop))
                for n, client in enumerate(clients)]
        reading = asyncio.create_task(_read_loop(http, reads, stop))
        try:
            await asyncio.sleep(1.0)
            down_at = time.monotonic()
            cluster.postgres.stop("fast")
            await asyncio.sleep(2.0)  # mutations and queries go on while the store is away
            cluster.postgres.start()
            up_at = time.monotonic()
            await wait_ready(api.base_url)
            ready_at = time.monotonic()
            with contextlib.suppress(AssertionError):  # judged below, with everything else
                await until(
                    lambda: sum(1 for o in outcomes if o.started > ready_at and o.ended) >= 12,
                    "12 mutations answered after PostgreSQL came back", 15.0)
        finally:
            stop.set()
            await asyncio.gather(*load, reading)
            for client in clients:
                await client.aclose()

    # Every failed expectation is collected, so one run shows the whole picture.
    problems = []
    # No 5xx, no transport error: each mutation either committed or was refused plainly.
    if not all(o.status == 200 for o in outcomes):
        problems.append(f"mutations without an HTTP 200 answer ({when()}):\n" + timeline(
            [o for o in outcomes if o.status != 200], down_at))
    unexpected = [o for o in outcomes
                  if o.ended and not o.succeeded and o.error_codes != ["STORE_UNAVAILABLE"]]
    if unexpected:
        problems.append(
            f"mutations failed with other errors than STORE_UNAVAILABLE ({when()}):\n"
            f"{timeline(unexpected, down_at)}\nthe server's log about them:\n"
            f"{cluster.log_lines_about(o.request_id for o in unexpected)}")
    refused = [o for o in outcomes if not o.succeeded]
    if not refused:
        problems.append("no mutation was refused while PostgreSQL was down")
    if not all(down_at <= o.ended and o.started <= ready_at for o in refused):
        problems.append(f"a mutation was refused while PostgreSQL was up ({when()}):\n"
                        f"{timeline(refused, down_at)}")
    resumed = [o for o in outcomes if o.started > ready_at]
    if sum(1 for o in resumed if o.succeeded) < 12 or not all(o.succeeded for o in resumed):
        problems.append(
            f"mutations after the restart did not all succeed promptly (12 expected within "
            f"15 s; {when()}):\n{timeline(outcomes[-30:], down_at)}")
    # Queries answered from Redis throughout, also while the store was down.
    failed_reads = [r for r in reads if r[2] != 200 or r[3]]
    if failed_reads:
        problems.append(f"queries failed: {failed_reads[:5]}")
    if sum(1 for started, ended, _, _ in reads if down_at < started and ended < up_at) < 5:
        problems.append("fewer than 5 queries answered while PostgreSQL was down")
    # The store holds exactly the events of the mutations that succeeded, each command whole.
    try:
        counts = check_mutations_against_store(outcomes, await cluster.store_events())
        assert counts == {"succeeded": len(outcomes) - len(refused), "failed": len(refused)}
    except AssertionError as error:
        problems.append(f"the store does not hold exactly the successful mutations: {error}")
    # The projector survived the outage.
    if not worker.alive:
        problems.append(f"the projector died:\n{cluster.casualties()}")
    assert not problems, "\n\n".join(problems)
    assert seeded < len(outcomes)
    await cluster.assert_equals_fresh_rebuild()
    print(f"\n{len(outcomes)} mutations, {len(refused)} refused with STORE_UNAVAILABLE; "
          f"{len(reads)} queries")


async def _read_loop(
    http: httpx.AsyncClient, reads: list[tuple[float, float, int, list[str]]],
    stop: asyncio.Event,
) -> None:
    """Queries in a loop: (started, ended, HTTP status, GraphQL error codes) of each."""
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        response = await http.post("/graphql", json={
            "query": READS, "variables": {"location": 1 + n % 3, "employee": 1 + n % 12}})
        codes = error_codes(response.json()) if response.status_code == 200 else []
        if response.status_code == 200 and not codes:
            data = response.json()["data"]
            assert data["location"]["employeeCount"] == len(data["location"]["employees"])
        reads.append((started, time.monotonic(), response.status_code, codes))
        await asyncio.sleep(0.02)


# 4. FLUSHALL while the system runs.


async def test_flushall_makes_the_projector_rebuild_and_queries_are_right_again(
    cluster: Cluster,
) -> None:
    # A retired generation is deleted after REBUILD_GRACE_SECONDS: short, to see it go.
    cluster.settings.update({"REBUILD_GRACE_SECONDS": "1"})
    (api,) = await cluster.start_apis(1, projector=True)  # `serve` runs the projector itself
    await first_leader(cluster)
    preload = InProcessLoad(cluster, SEED, writers=8)
    await preload.run(lambda: preload.position >= 4_000)
    await cluster.wait_caught_up()

    samples: list[tuple[float, dict[str, Any]]] = []
    stop = asyncio.Event()
    outcomes: list[Outcome] = []
    mover = MutationClient(api.base_url, outcomes)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30.0) as http:

        async def watch() -> None:
            while not stop.is_set():
                body = await graphql(http, STATUS)
                if not body.get("errors"):
                    samples.append((time.monotonic(), body["data"]["projectionStatus"]))
                await asyncio.sleep(0.005)

        async def move() -> None:
            rng = random.Random(SEED)
            while not stop.is_set():  # the preload's employees: ids 1.. (some terminated)
                await mover.move(rng.randrange(1, 200), rng.choice(preload.locations))
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(watch()), asyncio.create_task(move())]
        try:
            await asyncio.sleep(0.5)
            rebuilds_before = _rebuild_lines(cluster)
            flushed_at = time.monotonic()
            assert await cluster.redis.flushall()

            async def rebuilt() -> bool:
                logged = _rebuild_lines(cluster) > rebuilds_before
                seen = any(s["rebuilding"] for t, s in samples if t > flushed_at)
                if not (logged or seen):
                    return False
                last = samples[-1] if samples else (0.0, {})
                return bool(last[0] > flushed_at and last[1].get("rebuilding") is False
                            and last[1].get("lag") == 0 and await cluster.generation())

            await until(rebuilt, "the automatic rebuild after FLUSHALL", 30.0,
                        context=cluster.logs)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await mover.aclose()

        after = [s for t, s in samples if t > flushed_at]
        assert any(s["rebuilding"] for s in after) or _rebuild_lines(cluster) > rebuilds_before
        assert after[-1]["rebuilding"] is False
        # Every move that answered a payload is in the store; refusals wrote nothing.
        check_mutations_against_store(outcomes, await cluster.store_events())
        assert any(o.succeeded for o in outcomes)

        live = await cluster.assert_equals_fresh_rebuild()
        # And the API answers from the rebuilt generation.
        company = (await graphql(http, COMPANY))["data"]
        assert company["employees"]["totalCount"] == sum(
            1 for name in live if name.startswith("employee:"))
        assert {loc["id"]: [e["id"] for e in loc["employees"]] for loc in company["locations"]} == {
            doc["id"]: doc["employee_ids"] for name, (_, doc) in live.items()
            if name.startswith("location:")}
        status = (await graphql(http, STATUS))["data"]["projectionStatus"]
        assert status["rebuilding"] is False and status["lag"] == 0
        assert status["position"] == await cluster.store.head_position()

    # Nothing is left of the flushed generation, nor of any other: only the active one has keys.
    generation = await cluster.generation()

    foreign: list[str] = []

    async def only_active() -> bool:
        names = [k async for k in cluster.redis.scan_iter(match=f"{cluster.prefix}:g[0-9]*")]
        foreign[:] = sorted(k for k in names
                            if not k.startswith(f"{cluster.prefix}:g{generation}:"))
        return not foreign

    print(f"\nrebuilding seen by projectionStatus: {any(s['rebuilding'] for s in after)}, "
          f"in the log: {_rebuild_lines(cluster) > rebuilds_before}; "
          f"{sum(o.succeeded for o in outcomes)} moves during the test")
    await until(only_active, "only the active generation's keys remaining", 15.0, 0.2,
                context=lambda: f"generation {generation}; other keys: {foreign[:10]} "
                                f"({len(foreign)})\n{cluster.logs()}")


# 5. Many clients moving the same employees through two API replicas.


async def test_concurrent_moves_through_two_replicas_keep_every_domain_rule(
    cluster: Cluster,
) -> None:
    cluster.start_worker()
    apis = await cluster.start_apis(2)
    await first_leader(cluster)
    outcomes: list[Outcome] = []
    places, people = [1, 2, 3], [1, 2, 3, 4, 5]
    seeding = MutationClient(apis[0].base_url, outcomes)
    try:
        for place in places:
            assert (await seeding.create_location(place)).succeeded, outcomes[-1]
        for employee in people:
            assert (await seeding.create_employee(employee, places[employee % 3])).succeeded
    finally:
        await seeding.aclose()
    hired = {o.payload["employee"]["id"]: o.payload["employee"]["locationId"]
             for o in outcomes if o.mutation == "createEmployee" and o.payload is not None}
    seeded = len(outcomes)

    clients = [MutationClient(apis[n % 2].base_url, outcomes) for n in range(20)]
    ends_at = time.monotonic() + MOVE_SECONDS

    async def mover(client: MutationClient, n: int) -> None:
        rng = random.Random(SEED + n)
        while time.monotonic() < ends_at:
            await client.move(rng.choice(people), rng.choice(places))

    try:
        await asyncio.gather(*(mover(client, n) for n, client in enumerate(clients)))
    finally:
        for client in clients:
            await client.aclose()

    moves = outcomes[seeded:]
    assert all(o.status == 200 and not o.error_codes for o in moves), [
        (o.status, o.error_codes, o.transport_error) for o in moves
        if o.status != 200 or o.error_codes][:5]
    kinds = Counter("ok" if o.succeeded else o.refusal for o in moves)
    assert set(kinds) <= {"ok", "EMPLOYEE_ALREADY_AT_LOCATION", "CONCURRENCY_CONFLICT"}, kinds
    assert kinds["ok"] >= 100, kinds
    done = sorted((o for o in moves if o.succeeded), key=lambda o: o.position)
    assert len({o.position for o in done}) == len(done), "two moves answered the same position"
    # (A payload shows the employee as projected once its move was: possibly already moved on.)
    assert all(o.payload is not None and o.payload["employee"]["id"] == o.input["employeeId"]
               for o in done)
    check_mutations_against_store(outcomes, await cluster.store_events())

    # The last successful move of each employee decides where it is; its version counts them.
    final = dict(hired)
    moved = Counter(o.input["employeeId"] for o in done)
    for o in done:
        final[o.input["employeeId"]] = o.input["locationId"]
    versions = await cluster.stream_versions()
    assert {e: versions[f"employee-{e}"] for e in people} == {
        e: 2 + 2 * moved[e] for e in people}
    assert {p: versions[f"location-{p}"] for p in places} == {p: 1 for p in places}
    _assert_assignment_chains(await cluster.store_events(), people)

    await cluster.wait_caught_up()
    answers = []
    for api in apis:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30.0) as http:
            body = await graphql(http, COMPANY)
            assert not body.get("errors"), body
            answers.append(body["data"])
    assert answers[0] == answers[1], "the two replicas disagree"
    company = answers[0]
    employees = {edge["node"]["id"]: edge["node"] for edge in company["employees"]["edges"]}
    assert company["employees"]["totalCount"] == len(employees) == len(people)
    assert {e: node["locationId"] for e, node in employees.items()} == final
    assert {e: node["version"] for e, node in employees.items()} == {
        e: versions[f"employee-{e}"] for e in people}
    assert all(node["location"]["id"] == node["locationId"] for node in employees.values())
    listed = []
    for location in company["locations"]:
        staff = [e["id"] for e in location["employees"]]
        assert staff == sorted(set(staff)), f"location {location['id']} lists {staff}"
        assert location["employeeCount"] == len(staff)
        assert location["version"] == 1
        assert all(e["locationId"] == location["id"] for e in location["employees"])
        assert staff == sorted(e for e, at in final.items() if at == location["id"])
        listed += staff
    assert sorted(listed) == people, "an employee is at no location or at two"
    await cluster.assert_equals_fresh_rebuild()
    print(f"\n{MOVE_SECONDS:g} s of moves: {dict(kinds)}")


def _assert_assignment_chains(stored: list[dict[str, Any]], people: list[int]) -> None:
    """Per employee stream: created, assigned, then removed-from-where-it-was + assigned pairs,
    each pair one commit, gapless versions."""
    for employee in people:
        events = [e for e in stored if e["stream_id"] == f"employee-{employee}"]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        assert [e["type"] for e in events[:2]] == ["EmployeeCreated", "EmployeeAssignedToLocation"]
        at = events[1]["data"]["location_id"]
        for removed, assigned in zip(events[2::2], events[3::2], strict=True):
            assert (removed["type"], assigned["type"]) == (
                "EmployeeRemovedFromLocation", "EmployeeAssignedToLocation")
            assert removed["data"]["location_id"] == at != assigned["data"]["location_id"]
            assert removed["commit_position"] == assigned["commit_position"] == assigned[
                "position"]
            at = assigned["data"]["location_id"]
