"""Admin routes: the projections' dead letters, listed, retried after a fix, or discarded.

They do what ``orders projections dead-letters | retry | discard`` do (see
``docs/operations.md``); put them behind whatever guards the service's other operations.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Path, Query

from cqrskit import DeadLetter
from orders.http import models
from orders.http.jsonbody import DecimalJSONRoute
from orders.http.service import ServiceDep, problem_responses

__all__ = ["dead_letter_out", "router"]

router = APIRouter(route_class=DecimalJSONRoute)

ProjectionPath = Annotated[
    str, Path(max_length=200, pattern=r"^[A-Za-z0-9_.@-]+$", description="a projection's name")
]
OrderFilter = Annotated[
    str | None,
    Query(
        max_length=models.MAX_TEXT,
        pattern=models.TEXT_PATTERN,
        description="only this order's dead letters",
    ),
]
_ERRORS = problem_responses(404, 422, 503)


def _payload(data: bytes) -> object:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return data.decode(errors="replace")


def dead_letter_out(letter: DeadLetter) -> models.DeadLetterOut:
    event = letter.event
    return models.DeadLetterOut(
        projection=letter.projection,
        position=str(letter.position),
        stream_id=letter.stream_id,
        stream_version=event.stream_version,
        event_type=event.event_type,
        schema_version=event.schema_version,
        recorded_at=event.recorded_at,
        data=_payload(event.data),
        status="halted" if letter.halted else "parked",
        blocked_by=None if letter.blocked_by is None else str(letter.blocked_by),
        attempts=letter.attempts,
        error=letter.error,
        traceback=letter.traceback,
        failed_at=letter.failed_at,
    )


@router.get(
    "/projections/{name}/dead-letters",
    response_model=models.DeadLettersOut,
    responses=_ERRORS,
    tags=["admin"],
)
async def list_dead_letters(
    name: ProjectionPath, service: ServiceDep, order_id: OrderFilter = None
) -> models.DeadLettersOut:
    """The events projection ``name`` could not apply, oldest first: the parked ones (policy
    park) and the one it halted at (policy stop), with errors and tracebacks."""
    letters = await service.app.dead_letters(name, order_id=order_id)
    return models.DeadLettersOut(dead_letters=[dead_letter_out(letter) for letter in letters])


@router.post(
    "/projections/{name}/dead-letters/retry",
    response_model=models.RetryOut,
    responses=_ERRORS,
    tags=["admin"],
)
async def retry_dead_letters(
    name: ProjectionPath, service: ServiceDep, order_id: OrderFilter = None
) -> models.RetryOut:
    """Apply the dead letters again (after a fix): each stream's in order, each exactly once;
    a halted projection applies its halted event and resumes. ``failed`` lists those that
    failed again (kept, with their new error)."""
    outcome = (await service.app.retry_dead_letters(name, order_id=order_id))[name]
    return models.RetryOut(
        projection=name,
        applied=outcome.applied,
        failed=[dead_letter_out(letter) for letter in outcome.failed],
    )


@router.post(
    "/projections/{name}/dead-letters/discard",
    response_model=models.DiscardOut,
    responses=_ERRORS,
    tags=["admin"],
)
async def discard_dead_letters(
    name: ProjectionPath, service: ServiceDep, order_id: OrderFilter = None
) -> models.DiscardOut:
    """Drop the dead letters without applying them; a discarded halt is skipped and the
    projection resumes after it. The read model then lacks those events."""
    dropped = (await service.app.discard_dead_letters(name, order_id=order_id))[name]
    return models.DiscardOut(projection=name, discarded=dropped)
