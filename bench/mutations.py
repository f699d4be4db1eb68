"""HTTP mutations through the real server against a strawberry no-op mutation of the same shape.

Our service (`python -m app serve`, one worker, its projector; SQLite + the Redis read model) holds
20 locations × 50 employees (bench/history.py). Each request is
`changeEmployeeJobTitle(input: {employeeId, jobTitle})` with a new title: one command, one
appended event, and the response waits until the projector has applied it (read-your-writes).
Baseline, same uvicorn settings, same run: a strawberry app whose mutation of the same shape
returns a constant (bench/baseline_app.py). Two shapes:

- wrk, 32 connections, employees cycling over 1 000, the read model on `--redis-url`
  (goal ≥ 0.5×);
- contended: `serve` as it starts by default (its embedded Valkey, with its append-only file),
  16 connections, each request on a random one of the 1 000, so concurrent commands collide
  (goal ≥ 0.6×).

The server's peak RSS is reported.

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
CONTENDED = 16


def run(options: Options) -> list[Figure]:
    seconds = 1 if options.quick else 5
    progress(f"mutations: wrk {CONNECTIONS} connections, then {CONTENDED} on random employees "
             f"(embedded default), {seconds} s per load, {options.repeats} repeats")
    with redis_server(options.redis_url) as redis_url:
        ours, base, rss, rss0 = _loads(redis_url, options, seconds, CONNECTIONS, embedded=False)
        hot, hot_base, _, _ = _loads(redis_url, options, seconds, CONTENDED, embedded=True)
    return [
        Figure("mutations", "changeEmployeeJobTitle over HTTP (waits for its projection)",
               _rate(ours), "req/s", "strawberry no-op mutation, same shape", _rate(base), 0.5,
               note=_note(ours)),
        Figure("mutations", f"same, {CONTENDED} clients on random employees, embedded default",
               _rate(hot), "req/s", "no-op mutation, same load", _rate(hot_base), 0.6,
               note=_note(hot)),
        Figure("mutations", "API process CPU per changeEmployeeJobTitle", _cpu(ours), "µs",
               "no-op mutation's CPU", _cpu(base), higher_is_better=False),
        Figure("mutations", "API process peak RSS under the mutation load", rss, "MiB",
               "no-op app's peak RSS", rss0, higher_is_better=False),
    ]


def _loads(redis_url: str, options: Options, seconds: float, connections: int,
           embedded: bool) -> tuple[list[Load], list[Load], float, float]:
    """Our server's and the baseline's loads, interleaved, and their peak RSS."""
    ours_loads: list[Load] = []
    base_loads: list[Load] = []
    with both_servers(redis_url, "mutations", embedded) as (ours, baseline):
        base_gql = f"{baseline.url}/graphql"
        for url in (ours.url, base_gql):
            data = check(url, RETITLE)["data"]
            assert data["changeEmployeeJobTitle"]["__typename"] == "EmployeePayload", data  # type: ignore[index]
        for _ in range(options.repeats):
            ours_loads.append(wrk_on(ours, ours.url, RETITLE, EMPLOYEES, seconds, connections,
                                     random_ids=embedded))
            base_loads.append(wrk_on(baseline, base_gql, RETITLE, EMPLOYEES, seconds,
                                     connections, random_ids=embedded))
        return ours_loads, base_loads, ours.peak_rss_mib(), baseline.peak_rss_mib()


def _note(loads: list[Load]) -> str:
    errors = sum(load.errors for load in loads)
    return (f"p50 {median([x.p50_ms for x in loads]):.1f} ms, "
            f"p99 {median([x.p99_ms for x in loads]):.1f} ms"
            + (f", {errors} errors" if errors else ""))


def _rate(loads: list[Load]) -> float:
    return median([x.requests_per_second for x in loads])


def _cpu(loads: list[Load]) -> float:
    return median([x.cpu_us_per_request for x in loads])


cli(__name__, run, __doc__)
