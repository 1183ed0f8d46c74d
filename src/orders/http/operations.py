"""Operations routes: liveness, readiness (with projection lag) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from orders.http import models
from orders.http.jsonbody import DecimalJSONRoute
from orders.http.service import ServiceDep

log = logging.getLogger("orders.http")

READY_TIMEOUT = 2.0

__all__ = ["READY_TIMEOUT", "router"]

router = APIRouter(route_class=DecimalJSONRoute)


@router.get("/healthz", response_model=models.HealthOut, tags=["operations"])
async def healthz() -> models.HealthOut:
    """The process is alive (it checks nothing else)."""
    return models.HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=models.ReadyOut,
    responses={503: {"model": models.ReadyOut, "description": "not ready"}},
    tags=["operations"],
)
async def readyz(service: ServiceDep, response: Response) -> models.ReadyOut:
    """Ready to serve: the store answers and the projections run; with their lag."""
    mode: Literal["in-process", "external"] = (
        "in-process" if service.projections_in_process else "external"
    )
    try:
        lags = await asyncio.wait_for(
            service.app.projection_lags(in_process=service.projections_in_process),
            READY_TIMEOUT,
        )
    except Exception as error:  # any failure to reach the store means "not ready"
        log.warning("readiness check failed: %s", error)
        response.status_code = 503
        return models.ReadyOut(
            ready=False, store="unreachable", projections_mode=mode, projections=[]
        )
    ready = all(lag.running is not False for lag in lags)
    response.status_code = 200 if ready else 503
    return models.ReadyOut(
        ready=ready,
        store="reachable",
        projections_mode=mode,
        projections=[
            models.ProjectionOut(
                name=lag.name,
                position=str(lag.position),
                running=lag.running,
                lag_events=lag.lag_events,
                lag_seconds=round(lag.lag_seconds, 3),
            )
            for lag in lags
        ],
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    tags=["operations"],
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics (text format)."""
    try:
        lags = await asyncio.wait_for(
            service.app.projection_lags(in_process=service.projections_in_process),
            READY_TIMEOUT,
        )
    except Exception as error:  # scraping must not fail because the store is down
        log.warning("projection metrics unavailable: %s", error)
    else:
        service.metrics.observe_projections(lags)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
