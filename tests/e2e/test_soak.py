"""The soak benchmark runs: `python -m bench.soak` at a tiny size exits 0 and prints its table.

The real soak (10 minutes, `python -m bench.soak`) is run by hand, never by the test suite; this
only keeps the script working: two replicas and a projector on PostgreSQL and Redis, a few
seconds of mixed load with subscribers, no error response, every process stopped cleanly.
Memory is judged over the real run; a few seconds are all warm-up, so the tolerance is wide here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, require

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = {"replica-1", "replica-2", "projector"}

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_tiny_soak_passes_and_prints_a_row_per_process(tmp_path: Path) -> None:
    postgres = require(POSTGRES_URL, "TEST_POSTGRES_URL")
    redis = require(REDIS_URL, "TEST_REDIS_URL")
    # A database of its own beside the test one (created if missing): the soak drops its tables.
    soak_db = postgres.split("?")[0].rsplit("/", 1)[0] + "/cqrs_soak"
    samples = tmp_path / "samples.csv"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.1", "--warmup-seconds", "2",
         "--sample-seconds", "1", "--clients", "4", "--subscribers", "4", "--locations", "3",
         "--employees", "20", "--tolerance-mib", "40",
         "--postgres-url", soak_db, "--redis-url", redis, "--csv", str(samples)],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
        timeout=90,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0][1].strip() == "process"
    by_process = {row[1].strip(): row for row in rows if row[1].strip() in PROCESSES}
    assert set(by_process) == PROCESSES
    for row in by_process.values():
        assert row[3].strip().endswith("MiB") and row[4].strip().endswith("MiB")  # start, end
        assert row[7].strip() == "0"  # exit status after SIGTERM
    assert "memory flat" in done.stdout and "no error responses" in done.stdout
    lines = samples.read_text().splitlines()
    assert lines[0].startswith("elapsed_s,replica-1_rss_kib,replica-2_rss_kib,projector_rss_kib")
    assert len(lines) >= 1 + 6  # a sample a second over 6 s
