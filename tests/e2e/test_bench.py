"""The benchmark suite runs: `python -m bench --quick` exits 0 and prints its table.

Speed is judged by reading the benchmarks' figures, never asserted here: this only keeps the
suite working (tiny sizes, one repeat each).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.redis_cost import QUERIES, SUBSCRIBERS

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ["commands", "appends", "projection", "long_streams", "limits"]


def test_the_quick_benchmark_suite_prints_its_table() -> None:
    pytest.importorskip("eventsourcing", reason="the bench extra: pip install -e '.[bench]'")
    benches = [*BENCHES, "queries", "mutations", "replicas"] if shutil.which("wrk") else BENCHES
    env = {**os.environ, "LOG_LEVEL": "WARNING"}
    test_postgres = os.environ.get("TEST_POSTGRES_URL", "")
    # A database of its own beside the test one (created if missing): the bench drops tables.
    env.setdefault("BENCH_POSTGRES_URL",
                   test_postgres.rsplit("/", 1)[0] + "/cqrs_bench" if test_postgres else "")
    if os.environ.get("TEST_REDIS_URL"):
        env.setdefault("BENCH_REDIS_URL", os.environ["TEST_REDIS_URL"])
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", ",".join(benches)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| bench | figure | value | baseline")
    assert {line.split("|")[1].strip() for line in table[2:]} >= {
        b.replace("_", " ") for b in benches
    }
    assert "FAILED" not in done.stdout


def test_the_redis_cost_bench_prints_every_figure() -> None:
    """`python -m bench.redis_cost` (docs/scaling.md) at tiny sizes: a line per figure."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.redis_cost", "--events", "1200", "--queries", "3",
         "--messages", "50", "--repeats", "1"],
        cwd=ROOT, env={**os.environ, "LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for name in [*QUERIES, "projection, batches of 5 000", "projection, one commit per batch"]:
        assert any(line.startswith(name) for line in done.stdout.splitlines()), name
    for subscribers in SUBSCRIBERS:
        assert f"{subscribers:4} subscribers:" in done.stdout
