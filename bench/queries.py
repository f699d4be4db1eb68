"""HTTP queries through the real server against a constant-resolver strawberry app and a bare GET.

Our service (`python -m app serve`, one worker, its projector; SQLite + the Redis read model) holds
20 locations × 50 employees (bench/history.py). wrk (1 thread, 32 connections) POSTs
  employee(id) { 7 fields }                       ids cycling over 1 000 employees
  location(id) { 3 fields employees { 7 fields } } ids cycling over 20 locations (50 employees)
Baselines, same uvicorn settings, same run: a strawberry app of the same shape whose resolvers
return constants (bench/baseline_app.py), and a bare Starlette endpoint doing one Redis GET.
Goal: ≥ 0.8× the constant app; the ratio to the bare GET and the server's peak RSS are reported.

    python -m bench.queries [--quick] [--repeats N] [--redis-url URL]
"""

from __future__ import annotations

from bench.common import Figure, Options, cli, median, progress, redis_server
from bench.http import EMPLOYEES, LOCATIONS, Load, body, both_servers, check, wrk, wrk_on

FIELDS = "id firstName lastName jobTitle locationId version updatedAt"
EMPLOYEE = body(f"query($id: Int!) {{ employee(id: $id) {{ {FIELDS} }} }}", id="__ID__")
LOCATION = body(f"query($id: Int!) {{ location(id: $id) {{ id city employeeCount "
                f"employees {{ {FIELDS} }} }} }}", id="__ID__")
CONNECTIONS = 32


def run(options: Options) -> list[Figure]:
    seconds = 1 if options.quick else 5
    progress(f"queries: wrk {CONNECTIONS} connections, {seconds} s per load, "
             f"{options.repeats} repeats")
    loads: dict[str, list[Load]] = {k: [] for k in ("emp", "emp0", "loc", "loc0", "get")}
    with redis_server(options.redis_url) as redis_url, \
            both_servers(redis_url, "queries") as (ours, baseline):
        ours_gql, base_gql = ours.url, f"{baseline.url}/graphql"
        for url in (ours_gql, base_gql):
            check(url, EMPLOYEE)
            check(url, LOCATION)
        for _ in range(options.repeats):  # interleaved: drift in the machine's load hits all alike
            loads["emp"].append(wrk_on(ours, ours_gql, EMPLOYEE, EMPLOYEES, seconds, CONNECTIONS))
            loads["emp0"].append(wrk_on(baseline, base_gql, EMPLOYEE, EMPLOYEES, seconds,
                                        CONNECTIONS))
            loads["loc"].append(wrk_on(ours, ours_gql, LOCATION, LOCATIONS, seconds, CONNECTIONS))
            loads["loc0"].append(wrk_on(baseline, base_gql, LOCATION, LOCATIONS, seconds,
                                        CONNECTIONS))
            loads["get"].append(wrk(f"{baseline.url}/get/__ID__", "", EMPLOYEES, seconds,
                                    CONNECTIONS, method="GET"))
        rss, rss0 = ours.peak_rss_mib(), baseline.peak_rss_mib()

    def rate(key: str) -> float:
        return median([load.requests_per_second for load in loads[key]])

    def cpu(key: str) -> float:
        return median([load.cpu_us_per_request for load in loads[key]])

    def note(key: str) -> str:
        errors = sum(load.errors for load in loads[key])
        p50 = median([load.p50_ms for load in loads[key]])
        p99 = median([load.p99_ms for load in loads[key]])
        return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms" + (f", {errors} errors" if errors else "")

    return [
        Figure("queries", "employee(id) over HTTP", rate("emp"), "req/s",
               "strawberry, constant resolvers", rate("emp0"), 0.8, note=note("emp")),
        Figure("queries", "location(id) { employees } (50) over HTTP", rate("loc"), "req/s",
               "strawberry, constant resolvers", rate("loc0"), 0.8, note=note("loc")),
        Figure("queries", "API process CPU per employee(id)", cpu("emp"), "µs",
               "constant app's CPU", cpu("emp0"), higher_is_better=False),
        Figure("queries", "API process CPU per location(id) { employees }", cpu("loc"), "µs",
               "constant app's CPU", cpu("loc0"), higher_is_better=False),
        Figure("queries", "employee(id) over HTTP vs one Redis GET", rate("emp"), "req/s",
               "bare Starlette endpoint, one Redis GET", rate("get"), note=note("get")),
        Figure("queries", "API process peak RSS under the query loads", rss, "MiB",
               "constant app's peak RSS", rss0, higher_is_better=False),
    ]


cli(__name__, run, __doc__)
