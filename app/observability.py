"""Correlation ids, structured JSON logs and Prometheus metrics.

Under `serve --workers N` every worker is a process of its own: `serve` points
PROMETHEUS_MULTIPROC_DIR at a private directory (`prepare_multiprocess_dir`) before the workers
start, prometheus-client then keeps each worker's values in memory-mapped files there, and
`exposition` answers a scrape with the figures of all workers together: counters and histograms
summed, each gauge as its `multiprocess_mode` says. A single-process server keeps plain values
in memory, as before.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import TextIO

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.private_files import private_dir

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Read when this module is imported, just after prometheus-client itself read it to choose how
# values are stored: the two decisions must agree.
MULTIPROCESS_DIR: str | None = os.environ.get(MULTIPROCESS_VARIABLE) or None

# Gauges under workers: `livesum` adds up what the live workers hold (sockets, subscribers);
# `livemostrecent` takes the value the most recent live writer set: the projector's position
# (set by whichever worker leads) and the lag (measured by the worker a scrape reached).
COMMANDS = Histogram(
    "cqrs_command_seconds", "Command latency by command and outcome", ["command", "outcome"]
)
PROJECTED_POSITION = Gauge(
    "cqrs_projection_position", "Last position committed to Redis",
    multiprocess_mode="livemostrecent",
)
PROJECTION_BATCH = Histogram(
    "cqrs_projection_batch_events", "Events per projected batch",
    buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000, 5000),
)
APPENDS = Counter("cqrs_appends_total", "Appends committed")
SUBSCRIBERS = Gauge(
    "cqrs_subscribers", "Subscriptions being fed right now", multiprocess_mode="livesum"
)
REJECTIONS = Counter(
    "cqrs_rejected_requests_total",
    "Requests refused by a limit or by authentication, by reason",
    ["reason"],
)
HTTP_REQUESTS = Counter(
    "cqrs_http_requests_total",
    "HTTP requests by method, kind of path and response status ('none': no response began)",
    ["method", "path_kind", "status"],
)
PROJECTION_LAG_EVENTS = Gauge(
    "cqrs_projection_lag_events", "Events appended but not yet in the read model (at scrape)",
    multiprocess_mode="livemostrecent",
)
PROJECTION_LAG_SECONDS = Gauge(
    "cqrs_projection_lag_seconds",
    "Age of the oldest event not yet in the read model, 0 when caught up (at scrape)",
    multiprocess_mode="livemostrecent",
)
PARKED_EVENTS = Gauge(
    "cqrs_parked_events",
    "Events the read model set aside because a projection could not apply them (at scrape)",
    multiprocess_mode="livemostrecent",
)
WEBSOCKETS = Gauge(
    "cqrs_websocket_connections", "Open websocket connections", multiprocess_mode="livesum"
)


def prepare_multiprocess_dir(var_dir: Path) -> Path:
    """The metrics directory of `serve --workers N`: VAR_DIR/metrics, emptied (files of an
    earlier run would be added to this one's figures) and readable by the service's user only."""
    path = var_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    private_dir(path, narrow=True)
    return path


# What a scrape reads under workers: every worker's files, read anew at each collection.
_WORKERS = CollectorRegistry()
if MULTIPROCESS_DIR is not None:
    multiprocess.MultiProcessCollector(_WORKERS, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """The Prometheus text of a scrape: this process's metrics, or under workers all of them."""
    if MULTIPROCESS_DIR is None:
        return generate_latest(REGISTRY)
    _forget_dead_workers(MULTIPROCESS_DIR)
    return generate_latest(_WORKERS)


def worker_stopped() -> None:
    """A worker's last word: its live gauges (sockets, subscribers) leave the sums."""
    if MULTIPROCESS_DIR is not None:
        _mark_dead(os.getpid(), MULTIPROCESS_DIR)


def _forget_dead_workers(path: str) -> None:
    """The live gauges of a worker that died without `worker_stopped` (killed, crashed) leave
    the sums at the next scrape."""
    for file in Path(path).glob("gauge_live*_*.db"):
        pid = file.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            _mark_dead(int(pid), path)


def _mark_dead(pid: int, path: str) -> None:
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: not ours, but not gone either
        pass
    return True


def new_correlation_id() -> str:
    """128 random bits as 32 hex digits (not a secret: Python's generator, no system call)."""
    return f"{random.getrandbits(128):032x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the request's correlation id."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", None) or correlation_id.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class ConsoleFormatter(logging.Formatter):
    """One line for a person at a terminal: time, level, logger, message, and the request's
    correlation id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request = getattr(record, "correlation_id", None) or correlation_id.get()
        return f"{line} [request {request}]" if request else line


def log_format(chosen: str, log_json: bool | None, stream: TextIO) -> str:
    """`json` or `console`: LOG_FORMAT when it names one; else the older LOG_JSON when it is
    set (deployments that set it keep their format); else what `stream` is: a terminal gets
    console lines, anything else (a file, a pipe, a log collector) JSON."""
    if chosen != "auto":
        return chosen
    if log_json is not None:
        return "json" if log_json else "console"
    return "console" if stream.isatty() else "json"


def configure_logging(level: str, chosen_format: str = "auto",
                      log_json: bool | None = None) -> None:
    """Log to stderr at `level`, in the format `log_format` picks for it."""
    handler = logging.StreamHandler()
    as_json = log_format(chosen_format, log_json, handler.stream) == "json"
    handler.setFormatter(JsonFormatter() if as_json else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic's INFO lines describe its own machinery at every start (app.event_store.migrations
    # logs what it upgraded): shown at DEBUG only.
    logging.getLogger("alembic").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
