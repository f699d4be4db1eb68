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
from app.read_model.refusals import explain, refusal

# The name these lines carried before app/main.py became app/web/: log filters match on it.
log = logging.getLogger("app.main")


async def healthz(_request: Request) -> Response:
    """Alive: 200 for as long as the process answers at all."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 while this process can answer queries, else 503 with the reason: the event store
    answers; the Redis node it reads serves its keys (not a Cluster node refusing them with
    MOVED), the primary takes writes (not READONLY), and, with READY_MAX_LAG_EVENTS, the read
    model is at most that many events behind."""
    services: Services = request.app.state.services
    checks = {"event_store": False, "redis": False}
    reasons: list[str] = []
    head = 0
    try:
        head = await services.store.head_position()
        checks["event_store"] = True
    except Exception as exc:
        log.warning("readiness: event store unreachable: %s", exc)
        reasons.append("the event store is unreachable")
    try:
        refused = await services.read_model.readiness()
        if refused is None:
            checks["redis"] = True
        else:
            reasons.append(refused)
    except Exception as exc:
        kind = refusal(exc)
        reason = explain(kind, exc) if kind is not None else f"redis unreachable: {exc}"
        log.warning("readiness: %s", reason)
        reasons.append(reason)
    bound = services.settings.ready_max_lag_events
    if bound and checks["event_store"] and checks["redis"]:
        try:
            behind = head - await services.read_model.checkpoint()
        except Exception as exc:
            behind, reasons = bound + 1, [*reasons, f"redis unreachable: {exc}"]
        if behind > bound:
            checks["redis"] = False
            reasons.append(f"the read model is {behind} events behind (READY_MAX_LAG_EVENTS "
                           f"is {bound})")
    ready = all(checks.values())
    body: dict[str, object] = {"ready": ready, **checks}
    if reasons:
        body["reasons"] = reasons
    return JSONResponse(body, status_code=200 if ready else 503)


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
