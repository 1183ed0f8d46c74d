"""The Orders subscription queries: dashboard and daily stats, one order, lists of orders.

Each is the matching query of :class:`~orders.queries.OrderQueries`, answered again once the
projections applied an event that may change it (see :class:`cqrskit.live.LiveQueries`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from cqrskit import RecordedEvent
from cqrskit.live import LiveQueries, QuerySubscription
from cqrskit.supervision import ProjectionReport
from orders.domain import stream_id
from orders.queries import DailyStats, DashboardStats, OrderPage, OrderQueries, OrderView

__all__ = ["OrderSubscriptions"]

_ORDER_STREAM_PREFIX = stream_id("")


def _any_order_event(event: RecordedEvent) -> bool:
    return event.stream_id.startswith(_ORDER_STREAM_PREFIX)


class OrderSubscriptions:
    """Live versions of the Orders queries, each an async context manager that yields a
    :class:`~cqrskit.live.QuerySubscription` of the query's result."""

    def __init__(
        self,
        live: LiveQueries,
        queries: OrderQueries,
        projections: Callable[[], Awaitable[list[ProjectionReport]]],
    ) -> None:
        self.live = live
        self._queries = queries
        self._projections = projections

    def projections(self) -> AbstractAsyncContextManager[QuerySubscription[list[ProjectionReport]]]:
        """Each projection's report (checkpoint, head, lag, events/s): after new events, and
        every second (rates and lag ages change with time), at most once a second."""
        return self.live.subscribe(
            ("projections",),
            self._projections,
            lambda event: True,
            min_interval=1.0,
            refresh=1.0,
        )

    def dashboard_stats(self) -> AbstractAsyncContextManager[QuerySubscription[DashboardStats]]:
        return self.live.subscribe(
            ("dashboard_stats",), self._queries.dashboard_stats, _any_order_event
        )

    def daily_stats(self) -> AbstractAsyncContextManager[QuerySubscription[list[DailyStats]]]:
        return self.live.subscribe(("daily_stats",), self._queries.daily_stats, _any_order_event)

    def order(
        self, order_id: str
    ) -> AbstractAsyncContextManager[QuerySubscription[OrderView | None]]:
        """One order (``None`` until it exists)."""
        stream = stream_id(order_id)

        async def query() -> OrderView | None:
            return await self._queries.get_order(order_id)

        def affected_by(event: RecordedEvent) -> bool:
            return event.stream_id == stream

        return self.live.subscribe(("order", order_id), query, affected_by)

    def orders(
        self,
        *,
        status: str | None = None,
        customer_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> AbstractAsyncContextManager[QuerySubscription[OrderPage]]:
        """A page of orders, as :meth:`OrderQueries.list_orders` answers it."""

        async def query() -> OrderPage:
            return await self._queries.list_orders(
                status=status,
                customer_id=customer_id,
                limit=limit,
                cursor=cursor,
                newest_first=newest_first,
            )

        key = ("orders", status, customer_id, limit, cursor, newest_first)
        return self.live.subscribe(key, query, _any_order_event)
