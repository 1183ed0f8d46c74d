"""Live routes over server-sent events: the global event log, and subscription queries.

``GET /events/stream`` sends every stored event (``id:`` its global position, ``event:`` its
type, ``data:`` the event as JSON, in the shape of ``GET /orders/{id}/events``). ``GET /live/...``
sends a query's answer now, then again each time the read model changed it (``event: result``,
``id:`` the position the read model had applied). See docs/http.md.

These routes stay out of the OpenAPI schema: a stream never ends, which neither the schema's
"Try it out" nor a schema fuzzer can handle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Header, Path, Query
from pydantic import BaseModel

from cqrskit.feed import FeedSubscription
from cqrskit.live import QuerySubscription
from cqrskit.supervision import ProjectionReport
from orders.http import models
from orders.http.frames import FrameCache
from orders.http.operations import projection_out
from orders.http.queries import (
    Cursor,
    Limit,
    Order,
    daily_out,
    dashboard_out,
    order_out,
    page_out,
)
from orders.http.service import OrderIdPath, Service, ServiceDep
from orders.http.sse import EventStreamResponse, FrameSource, MergedFrames, frame
from orders.queries import OrderPage

__all__ = ["router"]

router = APIRouter()
T = TypeVar("T")


class ProjectionsOut(BaseModel):
    """Every projection's report, and the head of the log they follow."""

    head: str | None
    projections: list[models.ProjectionOut]


class AppliedOut(BaseModel):
    name: str
    applied_at: datetime | None


class AppliedAtOut(BaseModel):
    """When each projection applied the event at ``position`` (null: not within the
    consistency timeout, or not seen by this process)."""

    position: str
    projections: list[AppliedOut]


def projections_out(reports: list[ProjectionReport]) -> ProjectionsOut:
    heads = [report.head for report in reports if report.head is not None]
    return ProjectionsOut(
        head=str(max(heads)) if heads else None,
        projections=[projection_out(report) for report in reports],
    )


MAX_POSITION = 2**63 - 1


class _EventFrames:
    def __init__(self, subscription: FeedSubscription, cache: FrameCache) -> None:
        self._subscription = subscription
        self._cache = cache

    async def next_frames(self, timeout: float | None) -> bytes:
        return self._cache.frames(await self._subscription.next_events(timeout))

    async def wait_cut_off(self) -> BaseException:
        return await self._subscription.wait_cut_off()


class _AnswerFrames(Generic[T]):
    """A live query's answers as frames: ``event: result`` with the position as ``id``, or
    (in a merged stream, whose ids belong to the event log) ``event: <name>`` without one."""

    def __init__(
        self,
        subscription: QuerySubscription[T],
        render: Callable[[T], bytes],
        name: str | None = None,
    ) -> None:
        self._subscription = subscription
        self._render = render
        self._name = name

    async def next_frames(self, timeout: float | None) -> bytes:
        answer = await self._subscription.next_answer(timeout)
        if answer is None:
            return b""
        data = self._render(answer.result)
        if self._name is not None:
            return frame(data, event=self._name)
        return frame(data, event="result", id=str(answer.position))

    async def wait_cut_off(self) -> BaseException:
        # A live query is never too slow (it keeps the latest answer only); its failures
        # surface through next_frames.
        await _forever()
        raise AssertionError("unreachable")


async def _forever() -> None:
    await asyncio.Event().wait()


def _json_of(render: Callable[[T], BaseModel | None]) -> Callable[[T], bytes]:
    return lambda result: _model_json(render(result))


def _model_json(model: BaseModel | None) -> bytes:
    return b"null" if model is None else model.__pydantic_serializer__.to_json(model)


def _live(
    service: Service,
    subscribe: Callable[[], AbstractAsyncContextManager[QuerySubscription[T]]],
    render: Callable[[T], BaseModel | None],
) -> EventStreamResponse:
    @contextlib.asynccontextmanager
    async def open_source() -> AsyncIterator[FrameSource]:
        async with subscribe() as subscription:
            yield _AnswerFrames(subscription, _json_of(render))

    return EventStreamResponse(service.streams, open_source)


@router.get("/events/stream", include_in_schema=False)
async def event_stream(
    service: ServiceDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_POSITION)] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,19}$")] = None,
) -> EventStreamResponse:
    """The global event log as server-sent events: after ``Last-Event-ID`` (a reconnecting
    browser sends it) or ``after``, or from now on."""
    start = int(last_event_id) if last_event_id is not None else after
    if start is not None and start > MAX_POSITION:
        start = MAX_POSITION
    app, cache = service.app, service.frame_cache

    @contextlib.asynccontextmanager
    async def open_source() -> AsyncIterator[FrameSource]:
        buffer = service.streams.settings.buffer
        async with app.subscribe_events(start, buffer=buffer) as subscription:
            yield _EventFrames(subscription, cache)

    return EventStreamResponse(service.streams, open_source)


@router.get("/live/stats/dashboard", include_in_schema=False)
async def live_dashboard_stats(service: ServiceDep) -> EventStreamResponse:
    """``GET /stats/dashboard``, live."""
    return _live(service, service.app.subscriptions.dashboard_stats, dashboard_out)


@router.get("/live/stats/daily", include_in_schema=False)
async def live_daily_stats(service: ServiceDep) -> EventStreamResponse:
    """``GET /stats/daily``, live."""
    return _live(service, service.app.subscriptions.daily_stats, daily_out)


@router.get("/live/orders/{order_id}", include_in_schema=False)
async def live_order(order_id: OrderIdPath, service: ServiceDep) -> EventStreamResponse:
    """``GET /orders/{order_id}``, live (``null`` while the order does not exist)."""

    def render(view: Any) -> models.OrderOut | None:
        return None if view is None else order_out(view)

    return _live(service, lambda: service.app.subscriptions.order(order_id), render)


@router.get("/live/orders", include_in_schema=False)
async def live_orders(
    service: ServiceDep,
    status: Annotated[Literal["draft", "submitted"] | None, Query()] = None,
    customer_id: Annotated[
        str | None, Query(max_length=models.MAX_TEXT, pattern=models.TEXT_PATTERN)
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "oldest",
) -> EventStreamResponse:
    """``GET /orders``, live: the same page, again whenever it changes."""
    subscriptions, newest_first = service.app.subscriptions, order == "newest"
    # Run once now, so that a bad cursor is refused (422) rather than failing the stream.
    await service.app.queries.list_orders(
        status=status,
        customer_id=customer_id,
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
    )

    def subscribe() -> AbstractAsyncContextManager[QuerySubscription[OrderPage]]:
        return subscriptions.orders(
            status=status,
            customer_id=customer_id,
            limit=limit,
            cursor=cursor,
            newest_first=newest_first,
        )

    return _live(service, subscribe, page_out)


@router.get("/live/projections", include_in_schema=False)
async def live_projections(service: ServiceDep) -> EventStreamResponse:
    """Each projection's status (as ``GET /readyz`` reports it), at most once a second."""
    return _live(service, service.app.subscriptions.projections, projections_out)


@router.get("/projections/applied/{position}", include_in_schema=False)
async def projections_applied(
    service: ServiceDep, position: Annotated[int, Path(ge=1, le=MAX_POSITION)]
) -> AppliedAtOut:
    """When each projection applied the event at ``position`` (a consistency token), waiting
    for it up to the consistency timeout: how the dashboard times a command's way to the read
    models."""
    times = await service.app.projection_applied_at(position)
    return AppliedAtOut(
        position=str(position),
        projections=[
            AppliedOut(
                name=name,
                applied_at=None if moment is None else datetime.fromtimestamp(moment, UTC),
            )
            for name, moment in times.items()
        ],
    )


#: how many past events the dashboard's log starts with
RECENT_EVENTS = 30


@router.get("/live/dashboard", include_in_schema=False)
async def live_dashboard(
    service: ServiceDep,
    status: Annotated[Literal["draft", "submitted"] | None, Query()] = None,
    customer_id: Annotated[
        str | None, Query(max_length=models.MAX_TEXT, pattern=models.TEXT_PATTERN)
    ] = None,
    limit: Limit = 10,
    cursor: Cursor = None,
    order: Order = "oldest",
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,19}$")] = None,
) -> EventStreamResponse:
    """Everything the dashboard shows, on one connection: the event log (``event: log``, ``id:``
    its position, starting with the last few events or after ``Last-Event-ID``), and the
    answers of the dashboard stats (``stats``), daily stats (``daily``), orders page
    (``orders``) and projection status (``projections``) live queries."""
    app, newest_first = service.app, order == "newest"
    await app.queries.list_orders(
        status=status,
        customer_id=customer_id,
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
    )
    if last_event_id is not None:
        start = min(int(last_event_id), MAX_POSITION)
    else:
        start = max(0, await app.head_position() - RECENT_EVENTS)
    subscriptions = app.subscriptions

    @contextlib.asynccontextmanager
    async def open_source() -> AsyncIterator[FrameSource]:
        buffer = service.streams.settings.buffer
        async with contextlib.AsyncExitStack() as stack:
            log = await stack.enter_async_context(app.subscribe_events(start, buffer=buffer))
            stats = await stack.enter_async_context(subscriptions.dashboard_stats())
            daily = await stack.enter_async_context(subscriptions.daily_stats())
            reports = await stack.enter_async_context(subscriptions.projections())
            page = await stack.enter_async_context(
                subscriptions.orders(
                    status=status,
                    customer_id=customer_id,
                    limit=limit,
                    cursor=cursor,
                    newest_first=newest_first,
                )
            )
            merged = MergedFrames(
                [
                    _EventFrames(log, service.log_frame_cache),
                    _AnswerFrames(stats, _json_of(dashboard_out), "stats"),
                    _AnswerFrames(daily, _json_of(daily_out), "daily"),
                    _AnswerFrames(page, _json_of(page_out), "orders"),
                    _AnswerFrames(reports, _json_of(projections_out), "projections"),
                ]
            )
            try:
                yield merged
            finally:
                await merged.close()

    return EventStreamResponse(service.streams, open_source)
