"""HTTP load: wrk (Debian's `wrk`) POSTing GraphQL bodies, and the baseline server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import rss_peak_kib
from bench.server import free_port, stop, wait_ready

WRK_SCRIPT = """
wrk.headers["Content-Type"] = "application/json"
local method = %s
local path = %s
local template = %s
local ids = %d
local random_ids = %s
local counter = 0
math.randomseed(os.time())
request = function()
  counter = counter + 1
  local id = tostring(counter %% ids + 1)
  if random_ids then
    id = tostring(math.random(ids))
  end
  local url = string.gsub(path, "__ID__", id)
  if method == "GET" then
    return wrk.format("GET", url)
  end
  local body = string.gsub(template, "__ID__", id)
  body = string.gsub(body, "__N__", tostring(counter))
  return wrk.format("POST", url, nil, body)
end
"""


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    seconds: float = 0.0
    cpu_us_per_request: float = float("nan")
    """CPU time (user + system, every thread) the server spent per request, when measured."""


def body(query: str, **variables: object) -> str:
    """A GraphQL POST body with variables (one query text: the servers' parse caches hit, as
    for any real client). The variable value "__ID__" becomes the integer wrk substitutes per
    request; "__N__" inside strings becomes the request's number."""
    text = json.dumps({"query": query, "variables": variables})
    return text.replace('"__ID__"', "__ID__")


def wrk(url: str, template: str, ids: int, seconds: float, connections: int,
        method: str = "POST", random_ids: bool = False) -> Load:
    """Run wrk against `url` (which may hold __ID__); each request's __ID__ cycles over 1..ids,
    or (`random_ids`) is drawn at random from them, so concurrent requests can collide."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk")
    base, _, path = url.partition("//")[2].partition("/")
    origin = url[: url.index(base) + len(base)]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (json.dumps(method), json.dumps("/" + path),
                                   json.dumps(template), ids,
                                   "true" if random_ids else "false"))
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(seconds, 1):.0f}s", "--latency",
             "-s", script.name, origin],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return Load(rate, _latency(out, "50%"), _latency(out, "99%"), errors, max(seconds, 1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_on(server: Process, url: str, template: str, ids: int, seconds: float,
           connections: int, method: str = "POST", random_ids: bool = False) -> Load:
    """`wrk`, also measuring the CPU time `server` spent per request meanwhile: steadier than
    the request rate on a machine whose speed drifts, and comparable between servers."""
    before = cpu_seconds(server.process.pid)
    load = wrk(url, template, ids, seconds, connections, method, random_ids)
    spent = cpu_seconds(server.process.pid) - before
    requests = load.requests_per_second * load.seconds
    load.cpu_us_per_request = spent / requests * 1e6 if requests else float("nan")
    return load


def _latency(out: str, percentile: str) -> float:
    match = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass
class Process:
    url: str
    process: subprocess.Popen[bytes]

    def peak_rss_mib(self) -> float:
        return rss_peak_kib(self.process.pid) / 1024


@contextlib.contextmanager
def baseline_server(redis_url: str, prefix: str, per_location: int) -> Iterator[Process]:
    """bench/baseline_app.py in its own process, with the service's uvicorn settings."""
    port = free_port()
    env = {**os.environ, "BASELINE_REDIS_URL": redis_url, "BASELINE_PREFIX": prefix,
           "BASELINE_EMPLOYEES_PER_LOCATION": str(per_location)}
    process = subprocess.Popen([sys.executable, "-m", "bench.baseline_app", "--port", str(port)],
                               env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", process)
        yield Process(url, process)
    finally:
        stop(process)


def check(url: str, payload: str) -> dict[str, object]:
    """One request, answered without GraphQL errors (the load only counts non-2xx)."""
    response = httpx.post(url, content=payload.replace("__ID__", "1").replace("__N__", "0"),
                          headers={"content-type": "application/json"}, timeout=30)
    response.raise_for_status()
    data = response.json()
    if data.get("errors"):
        raise RuntimeError(f"{url}: {data['errors']}")
    return data  # type: ignore[no-any-return]


def prepared_history(events: int) -> object:
    """A `prepare` for bench.server.running: the store's tables and a bulk-written history."""
    from bench.history import write_sqlite

    def prepare(directory: Path) -> None:
        import asyncio

        from app.domain.schema import default_schema
        from app.event_store import open_store

        async def create() -> None:
            url = f"sqlite+aiosqlite:///{directory / 'events.db'}"
            await (await open_store(url, default_schema())).close()

        asyncio.run(create())
        write_sqlite(directory / "events.db", events)

    return prepare


HISTORY_EVENTS = 2020  # bench/history.py: 20 locations, 1 000 employees (50 each), hired
LOCATIONS, EMPLOYEES, PER_LOCATION = 20, 1000, 50


@contextlib.contextmanager
def both_servers(redis_url: str, name: str, embedded: bool = False
                 ) -> Iterator[tuple[Process, Process]]:
    """Our service (with its projector, caught up on the history) and the baseline server,
    sharing one Redis: the baseline's bare GET reads the documents our projector wrote.
    `embedded`: ours runs as `serve` does by default, on its own embedded Valkey (with its
    append-only file); the baseline's GETs then find nothing, so use it for mutations only."""
    from bench.common import drop_prefix, unique_prefix
    from bench.server import running

    prefix = unique_prefix(name)
    ours = {} if embedded else {"REDIS_URL": redis_url}
    try:
        with running({**ours, "REDIS_PREFIX": prefix},
                     prepare=prepared_history(HISTORY_EVENTS)) as server:  # type: ignore[arg-type]
            check(server.url, body("query($id: Int!, $p: Int) { employee(id: $id, "
                                   "minPosition: $p) { id } }", id=EMPLOYEES, p=HISTORY_EVENTS))
            with baseline_server(redis_url, prefix, PER_LOCATION) as baseline:
                yield Process(server.url, server.process), baseline
    finally:
        import asyncio

        asyncio.run(drop_prefix(redis_url, prefix))
