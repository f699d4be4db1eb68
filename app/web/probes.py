"""The operators' endpoints: liveness (/healthz), readiness (/readyz), Prometheus (/metrics)."""

from __future__ import annotations

import datetime as dt
import logging

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.bootstrap import Services
from app.observability import (
    PARKED_EVENTS,
    PROJECTED_POSITION,
    PROJECTION_LAG_EVENTS,
    PROJECTION_LAG_SECONDS,
    exposition,
)

# The name these lines carried before app/main.py became app/web/: log filters match on it.
log = logging.getLogger("app.main")


async def healthz(_request: Request) -> Response:
    """Alive: 200 for as long as the process answers at all."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when the event store and Redis both answer, else 503; the body says which did."""
    services: Services = request.app.state.services
    checks = {"event_store": False, "redis": False}
    try:
        await services.store.head_position()
        checks["event_store"] = True
    except Exception as exc:
        log.warning("readiness: event store unreachable: %s", exc)
    try:
        checks["redis"] = await services.read_model.ping()
    except Exception as exc:
        log.warning("readiness: redis unreachable: %s", exc)
    ready = all(checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Every metric (of every worker under `serve --workers N`), the projection lag measured at
    this scrape."""
    await _projection_lag(request.app.state.services)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


async def _projection_lag(services: Services) -> None:
    """Projection position and lag, measured at scrape time: the read model's checkpoint, the
    events behind it, the age of the oldest one, and the events parked. (The change feed also
    sets the position as changes arrive, but a write can be seen answered before its notice
    reached this process: a scrape right after it showed the position before.)"""
    try:
        checkpoint = await services.read_model.checkpoint()
        head = await services.read_model.head()
        behind = max(head - checkpoint, 0)
        parked, _streams = await services.read_model.parked()
        seconds = 0.0
        if behind:
            oldest = await services.store.read_all(checkpoint, 1)
            if oldest:
                age = dt.datetime.now(dt.UTC) - oldest[0].recorded_at
                seconds = max(age.total_seconds(), 0.0)
    except Exception as exc:  # a scrape must still answer: the gauges keep their last value
        log.warning("projection lag unavailable: %s", exc)
        return
    PROJECTED_POSITION.set(checkpoint)
    PROJECTION_LAG_EVENTS.set(behind)
    PARKED_EVENTS.set(parked)
    PROJECTION_LAG_SECONDS.set(seconds)
