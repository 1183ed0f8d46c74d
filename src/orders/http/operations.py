"""Operations routes: liveness, readiness (with projection lag) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cqrskit import ProjectionReport, ProjectionState, ReadModelMismatch
from orders.http import models
from orders.http.admin import dead_letter_out
from orders.http.jsonbody import DecimalJSONRoute
from orders.http.service import ServiceDep

log = logging.getLogger("orders.http")

READY_TIMEOUT = 2.0

__all__ = ["READY_TIMEOUT", "projection_out", "router"]

router = APIRouter(route_class=DecimalJSONRoute)


@router.get("/healthz", response_model=models.HealthOut, tags=["operations"])
async def healthz() -> models.HealthOut:
    """Liveness: the process runs and its event loop answers. It checks nothing else: a
    restart would not end a store outage, and failed projections restart by themselves."""
    return models.HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=models.ReadyOut,
    responses={503: {"model": models.ReadyOut, "description": "not ready"}},
    tags=["operations"],
)
async def readyz(service: ServiceDep, response: Response) -> models.ReadyOut:
    """Readiness: 200 when the store answers (within 2 s), the read model is the event
    store's, and every projection this process runs is alive (running, catching up, standing
    by for another process's lease, or halted at an event it cannot apply: every process
    would halt there, so a halt is a ``warning``, not a reason); else 503, with the reasons.
    Each projection's state, checkpoint, head, lag, dead letters and halt."""
    mode: Literal["in-process", "external"] = (
        "in-process" if service.projections_in_process else "external"
    )
    supervisor = service.app.supervisor
    reasons = []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            reports = await service.app.projections()
        store: Literal["reachable", "unreachable"] = "reachable"
        async with asyncio.timeout(READY_TIMEOUT):
            await service.app.check_read_model()
    except ReadModelMismatch as refusal:
        log.warning("not ready: %s", refusal)
        reasons.append(str(refusal))
    except Exception as error:  # any failure to reach the store means "not ready"
        log.warning("readiness check failed: %s", error)
        reports, store = supervisor.status(), "unreachable"
        reasons.append(f"the store did not answer within {READY_TIMEOUT:g} s: {error}")
    warnings = [warning for report in reports for warning in _warnings(report)]
    warnings.extend(service.app.newer_versions_serving(reports))
    for report in reports:
        if not report.state.ready:
            cause = f" ({report.last_error})" if report.last_error else ""
            reasons.append(f"projection {report.name} is {report.state.value}{cause}")
        elif (
            service.projections_in_process
            and report.state is ProjectionState.EXTERNAL
            # a version this release does not declare (another release builds or serves it)
            and report.key in supervisor.names
        ):
            reasons.append(f"projection {report.name} should run in this process: not started")
    response.status_code = 503 if reasons else 200
    return models.ReadyOut(
        ready=not reasons,
        store=store,
        projections_mode=mode,
        projections=[projection_out(report) for report in reports],
        reasons=reasons,
        warnings=warnings,
    )


def _warnings(report: ProjectionReport) -> list[str]:
    """What needs a person without making the service unready (see docs/operations.md)."""
    found = []
    if report.halted is not None:
        letter, event = report.halted, report.halted.event
        found.append(
            f"projection {report.name} is halted at position {letter.position} ("
            f"{event.event_type} of {letter.stream_id} v{event.stream_version}): {letter.error};"
            f" fix it and retry it, or discard it (POST /projections/{report.name}/dead-letters"
            "/retry or /discard)"
        )
    if report.dead_letters:
        found.append(f"projection {report.name} has {report.dead_letters} dead letter(s)")
    return found


def projection_out(report: ProjectionReport) -> models.ProjectionOut:
    external = report.state is ProjectionState.EXTERNAL
    return models.ProjectionOut(
        name=report.name,
        state=report.state.value,
        version=report.version,
        role=report.role.value,
        position=str(report.checkpoint),
        head=None if report.head is None else str(report.head),
        running=None if external else report.state.ready,
        lag_events=report.lag_events,
        lag_seconds=None if report.lag_seconds is None else round(report.lag_seconds, 3),
        events_per_second=round(report.events_per_second, 1),
        restarts=report.restarts,
        last_error=report.last_error,
        retry_in=None if report.retry_in is None else round(report.retry_in, 3),
        dead_letters=report.dead_letters,
        halted=None if report.halted is None else dead_letter_out(report.halted),
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
        async with asyncio.timeout(READY_TIMEOUT):
            reports = await service.app.projections()
    except Exception as error:  # scraping must not fail because the store is down
        log.warning("projection metrics unavailable: %s", error)
    else:
        service.metrics.observe_projections(reports)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
