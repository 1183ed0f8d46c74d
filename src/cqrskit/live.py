"""Subscription queries: a query's answer now, then again each time the read model changed it.

A :class:`LiveQueries` hub runs each distinct query once for all its subscribers. After an
event that may change the answer (``affected_by``), it waits until the projections have applied
that event (``wait_applied``), runs the query again and hands the new answer to every
subscriber if it differs from the last one. So a subscriber sees exactly what a query would
return at that moment, never an answer ahead of or behind the read model it comes from.

Each subscriber keeps only the latest answer it has not taken yet: a slow subscriber skips
answers rather than queueing them, so it costs bounded memory and never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cqrskit.feed import EventFeed, FeedSubscription, SubscriberTooSlow
from cqrskit.messages import RecordedEvent

__all__ = ["Answer", "LiveQueries", "QuerySubscription"]

T = TypeVar("T")
log = logging.getLogger("cqrskit.live")


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A query's result, and the global position the read model had applied when it ran."""

    position: int
    result: T


class QuerySubscription(Generic[T]):
    """One subscriber's view of a live query: the latest :class:`Answer` not yet taken."""

    def __init__(self) -> None:
        self._latest: Answer[T] | None = None
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None

    async def next_answer(self, timeout: float | None) -> Answer[T] | None:
        """The newest answer not taken yet, waiting up to ``timeout`` seconds (``None``: no
        limit) for one; ``None`` when the time ran out. Raises the error that stopped the
        query (the store became unreachable, for instance)."""
        if self._latest is None and self._failure is None:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        if self._failure is not None:
            raise self._failure
        answer, self._latest = self._latest, None
        return answer

    def _offer(self, answer: Answer[T]) -> None:
        self._latest = answer
        self._changed.set()

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        self._changed.set()


class _LiveQuery(Generic[T]):
    def __init__(
        self,
        query: Callable[[], Awaitable[T]],
        affected_by: Callable[[RecordedEvent], bool],
        min_interval: float,
        refresh: float | None,
    ) -> None:
        self.query = query
        self.affected_by = affected_by
        self.min_interval = min_interval
        self.refresh = refresh
        self.subscribers: set[QuerySubscription[T]] = set()
        self.latest: Answer[T] | None = None
        self.task: asyncio.Task[None] | None = None

    def publish(self, answer: Answer[T]) -> None:
        if self.latest is not None and self.latest.result == answer.result:
            return
        self.latest = answer
        for subscriber in self.subscribers:
            subscriber._offer(answer)


class LiveQueries:
    """Live queries over one :class:`EventFeed`, each run once for all its subscribers.

    ``wait_applied(position)`` waits until the read model includes the event at ``position``
    (returning False when it gave up for now; it is asked again). ``min_interval`` is the least
    time between two runs of one query: a burst of events costs one run, not one per event.
    """

    def __init__(
        self,
        feed: EventFeed,
        wait_applied: Callable[[int], Awaitable[bool]],
        *,
        min_interval: float = 0.1,
    ) -> None:
        self._feed = feed
        self._wait_applied = wait_applied
        self.min_interval = min_interval
        self._queries: dict[Hashable, _LiveQuery[Any]] = {}

    @property
    def running(self) -> int:
        """How many distinct queries are live now."""
        return len(self._queries)

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        key: Hashable,
        query: Callable[[], Awaitable[T]],
        affected_by: Callable[[RecordedEvent], bool],
        *,
        min_interval: float | None = None,
        refresh: float | None = None,
    ) -> AsyncIterator[QuerySubscription[T]]:
        """Subscribe to the answers of ``query`` while the context is open.

        Subscribers with the same ``key`` share one live query (the first one's arguments are
        used): the key must name the query and its parameters. ``min_interval`` overrides the
        hub's; with ``refresh`` the query also runs again after that many seconds without a
        change (for answers that depend on time, such as a rate).
        """
        live: _LiveQuery[T] | None = self._queries.get(key)
        if live is None:
            interval = self.min_interval if min_interval is None else min_interval
            live = self._queries[key] = _LiveQuery(query, affected_by, interval, refresh)
            live.task = asyncio.create_task(self._run(live), name=f"cqrskit:live:{key!r}")
        subscription: QuerySubscription[T] = QuerySubscription()
        live.subscribers.add(subscription)
        if live.latest is not None:
            subscription._offer(live.latest)
        try:
            yield subscription
        finally:
            live.subscribers.discard(subscription)
            if not live.subscribers:
                del self._queries[key]
                assert live.task is not None
                live.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live.task

    async def _run(self, live: _LiveQuery[Any]) -> None:
        try:
            while True:
                try:
                    await self._follow(live)
                except SubscriberTooSlow:
                    # The query fell behind the log: its answer can always be computed again.
                    log.info("live query fell behind the event log; running it again")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("live query stopped: %s", error)
            for subscriber in live.subscribers:
                subscriber._fail(error)

    async def _follow(self, live: _LiveQuery[Any]) -> None:
        async with self._feed.subscribe() as events:
            position = events.position
            while True:
                await self._until_applied(position)
                live.publish(Answer(position, await live.query()))
                ran = time.monotonic()
                position = await self._next_change(live, events, position)
                pause = ran + live.min_interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # gather a burst into one run
                for event in await events.next_events(0):
                    if live.affected_by(event):
                        position = event.position

    @staticmethod
    async def _next_change(live: _LiveQuery[Any], events: FeedSubscription, position: int) -> int:
        """The position of the next event that may change the answer (``position`` again
        when the refresh time passed first)."""
        deadline = None if live.refresh is None else time.monotonic() + live.refresh
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            changed = [e for e in await events.next_events(timeout) if live.affected_by(e)]
            if changed:
                return changed[-1].position
            if deadline is not None and time.monotonic() >= deadline:
                return position

    async def _until_applied(self, position: int) -> None:
        while not await self._wait_applied(position):
            pass
