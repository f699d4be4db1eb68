"""Correlation ids, structured JSON logs and Prometheus metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import random

from prometheus_client import Counter, Gauge, Histogram

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)

COMMANDS = Histogram(
    "cqrs_command_seconds", "Command latency by command and outcome", ["command", "outcome"]
)
PROJECTED_POSITION = Gauge("cqrs_projection_position", "Last position committed to Redis")
PROJECTION_BATCH = Histogram(
    "cqrs_projection_batch_events", "Events per projected batch",
    buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000, 5000),
)
APPENDS = Counter("cqrs_appends_total", "Appends committed by this process")
SUBSCRIBERS = Gauge("cqrs_subscribers", "Subscriptions this process is feeding right now")
REJECTIONS = Counter(
    "cqrs_rejected_requests_total",
    "Requests refused by a limit or by authentication, by reason",
    ["reason"],
)
PROJECTION_LAG_EVENTS = Gauge(
    "cqrs_projection_lag_events", "Events appended but not yet in the read model (at scrape)"
)
PROJECTION_LAG_SECONDS = Gauge(
    "cqrs_projection_lag_seconds",
    "Age of the oldest event not yet in the read model, 0 when caught up (at scrape)",
)
PARKED_EVENTS = Gauge(
    "cqrs_parked_events",
    "Events the read model set aside because a projection could not apply them (at scrape)",
)
WEBSOCKETS = Gauge("cqrs_websocket_connections", "Open websocket connections of this process")


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


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler()
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
