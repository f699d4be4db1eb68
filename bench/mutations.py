"""HTTP mutations through the real server against a strawberry no-op mutation of the same shape.

Our service (`python -m app serve`, one worker, its projector; SQLite + the Redis read model) holds
20 locations × 50 employees (bench/history.py). wrk (1 thread, 32 connections) POSTs
`changeEmployeeJobTitle(input: {employeeId, jobTitle})` on employees cycling over 1 000, each
with a new title: one command, one appended event, and the response waits until the projector
has applied it (read-your-writes). Baseline, same uvicorn settings, same run: a strawberry app
whose mutation of the same shape returns a constant (bench/baseline_app.py).
Goal: ≥ 0.5× the no-op mutation; the server's peak RSS is reported.

    python -m bench.mutations [--quick] [--repeats N] [--redis-url URL]
"""

from __future__ import annotations

from bench.common import Figure, Options, cli, median, progress, redis_server
from bench.http import EMPLOYEES, Load, body, both_servers, check, wrk_on

RETITLE = body(
    "mutation($id: Int!, $t: String!) { changeEmployeeJobTitle(input: {employeeId: $id, "
    "jobTitle: $t}) { __typename ... on EmployeePayload { position employee { id jobTitle "
    "version } } ... on NotFoundError { message } } }", id="__ID__", t="Title __N__",
)
CONNECTIONS = 32


def run(options: Options) -> list[Figure]:
    seconds = 1 if options.quick else 5
    progress(f"mutations: wrk {CONNECTIONS} connections, {seconds} s per load, "
             f"{options.repeats} repeats")
    ours_loads: list[Load] = []
    base_loads: list[Load] = []
    with redis_server(options.redis_url) as redis_url, \
            both_servers(redis_url, "mutations") as (ours, baseline):
        base_gql = f"{baseline.url}/graphql"
        for url in (ours.url, base_gql):
            data = check(url, RETITLE)["data"]
            assert data["changeEmployeeJobTitle"]["__typename"] == "EmployeePayload", data  # type: ignore[index]
        for _ in range(options.repeats):
            ours_loads.append(wrk_on(ours, ours.url, RETITLE, EMPLOYEES, seconds, CONNECTIONS))
            base_loads.append(wrk_on(baseline, base_gql, RETITLE, EMPLOYEES, seconds,
                                     CONNECTIONS))
        rss, rss0 = ours.peak_rss_mib(), baseline.peak_rss_mib()

    def note(loads: list[Load]) -> str:
        errors = sum(load.errors for load in loads)
        return (f"p50 {median([x.p50_ms for x in loads]):.1f} ms, "
                f"p99 {median([x.p99_ms for x in loads]):.1f} ms"
                + (f", {errors} errors" if errors else ""))

    def cpu(loads: list[Load]) -> float:
        return median([x.cpu_us_per_request for x in loads])

    rate = median([x.requests_per_second for x in ours_loads])
    rate0 = median([x.requests_per_second for x in base_loads])
    return [
        Figure("mutations", "changeEmployeeJobTitle over HTTP (waits for its projection)", rate,
               "req/s", "strawberry no-op mutation, same shape", rate0, 0.5,
               note=note(ours_loads)),
        Figure("mutations", "API process CPU per changeEmployeeJobTitle", cpu(ours_loads),
               "µs", "no-op mutation's CPU", cpu(base_loads), higher_is_better=False),
        Figure("mutations", "API process peak RSS under the mutation load", rss, "MiB",
               "no-op app's peak RSS", rss0, higher_is_better=False),
    ]


cli(__name__, run, __doc__)
