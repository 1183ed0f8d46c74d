"""One follower of the global event log, fanned out to many subscribers.

Every subscriber of :meth:`EventStore.subscribe_all` costs the store a read per append; a
hundred browsers watching the log would cost a hundred. :class:`EventFeed` follows the log once
and hands each batch to every subscriber's bounded buffer. A subscriber may start anywhere in the
past: it reads the history from the store itself, then switches to the shared batches without
repeating or skipping an event.

The feed never waits for a subscriber. One that lets its buffer overflow while it is live is cut
off (:class:`SubscriberTooSlow`), so a slow consumer costs bounded memory and never slows the
writers or the other subscribers; it may subscribe again from its last position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from cqrskit.errors import CqrsKitError
from cqrskit.messages import RecordedEvent
from cqrskit.store import EventStore

__all__ = ["EventFeed", "FeedClosed", "FeedSubscription", "SubscriberTooSlow"]

log = logging.getLogger("cqrskit.feed")


class SubscriberTooSlow(CqrsKitError):
    """A feed subscriber fell more than its buffer behind the live log and was cut off."""

    def __init__(self, position: int, buffer: int) -> None:
        super().__init__(
            f"subscriber at position {position} fell more than {buffer} events behind the log"
        )
        self.position = position
        self.buffer = buffer


class FeedClosed(CqrsKitError):
    """The feed was closed while subscribed."""

    def __init__(self) -> None:
        super().__init__("the event feed was closed")


class FeedSubscription:
    """One subscriber's view of an :class:`EventFeed`: batches of events after ``position``.

    Iterate it (``async for batch in subscription``) or call :meth:`next_events`. Events come in
    global order, each exactly once. Raises :class:`SubscriberTooSlow` when cut off, and the
    store's error if following the log failed.
    """

    def __init__(self, feed: EventFeed, after: int, live_from: int, buffer: int) -> None:
        self._feed = feed
        #: the position of the last event handed to the consumer
        self.position = after
        self.buffer = buffer
        # Events up to ``_history_until`` are read from the store by this subscriber; later
        # ones arrive in ``_queue`` from the feed.
        self._history_until = live_from
        self._queue: deque[list[RecordedEvent]] = deque()
        self._unread = 0
        self._inside = False
        self._wakeup = asyncio.Event()
        self._failure: BaseException | None = None
        self._cut_off = asyncio.Event()

    def __aiter__(self) -> FeedSubscription:
        return self

    async def __anext__(self) -> list[RecordedEvent]:
        while True:
            events = await self.next_events(None)
            if events:
                return events

    async def next_events(self, timeout: float | None) -> list[RecordedEvent]:
        """The events after :attr:`position` available now (waiting up to ``timeout`` seconds
        for one; ``None``: no limit), or ``[]`` when the time ran out."""
        self._unread = 0
        self._inside = True
        try:
            if self.position < self._history_until:
                history = await self._feed.store.read_all(self.position, self._feed.batch_size)
                if history:
                    self.position = history[-1].position
                    return history
                self._history_until = self.position
            if not self._queue and self._failure is None:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
            if self._failure is not None:
                raise self._failure
            return self._take_queued()
        finally:
            self._inside = False

    async def wait_cut_off(self) -> BaseException:
        """Return (the error) once this subscription is cut off or the feed failed; for a
        consumer that may be blocked elsewhere (writing to a socket) and must stop."""
        await self._cut_off.wait()
        assert self._failure is not None
        return self._failure

    def _take_queued(self) -> list[RecordedEvent]:
        taken: list[RecordedEvent] = []
        position = self.position
        while self._queue:
            batch = self._queue.popleft()
            if batch[-1].position <= position:
                continue  # already read from the history
            if batch[0].position <= position:
                batch = [event for event in batch if event.position > position]
            taken.extend(batch)
            position = batch[-1].position
        self.position = position
        return taken

    def _offer(self, batch: list[RecordedEvent], feed_position: int) -> None:
        if self._failure is not None:
            return
        if not self._inside:
            # Events that arrived while the consumer was busy elsewhere: too many, and it is
            # cut off; a consumer waiting on us (or reading its history) is never too slow.
            self._unread += len(batch)
            if self._unread > self.buffer:
                self._fail(SubscriberTooSlow(self.position, self.buffer))
                return
        if self.position < self._history_until:
            self._history_until = feed_position  # read from the store with the rest
        else:
            self._queue.append(batch)
        self._wakeup.set()

    def _fail(self, error: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = error
        self._queue.clear()
        self._wakeup.set()
        self._cut_off.set()


class EventFeed:
    """The global event log followed once and shared by many :class:`FeedSubscription`.

    The follower starts with the first subscriber and stops with the last one, so an idle feed
    costs nothing. ``buffer`` is the default number of events a subscriber may have waiting.
    """

    def __init__(self, store: EventStore, *, batch_size: int = 1000, buffer: int = 10_000) -> None:
        self.store = store
        self.batch_size = batch_size
        self.buffer = buffer
        #: the position of the last event handed to the subscribers
        self.position = 0
        self._subscribers: set[FeedSubscription] = set()
        self._follower: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def following(self) -> bool:
        """Whether the feed is following the log (it is while anyone subscribes)."""
        return self._follower is not None and not self._follower.done()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, after: int | None = None, *, buffer: int | None = None
    ) -> AsyncIterator[FeedSubscription]:
        """A subscription to the events after position ``after`` (``None``: from now on),
        open while the context is. ``buffer`` overrides the feed's default."""
        async with self._starting:
            if self._follower is None or self._follower.done():
                self.position = await self.store.head_position()
                self._follower = asyncio.create_task(
                    self._follow(self.position), name="cqrskit:event-feed"
                )
            start = self.position if after is None else after
            subscription = FeedSubscription(
                self, start, self.position, self.buffer if buffer is None else buffer
            )
            self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)
            async with self._starting:
                if not self._subscribers:
                    await self._stop()

    async def close(self) -> None:
        """Stop following the log; current subscriptions raise :class:`FeedClosed`."""
        async with self._starting:
            await self._stop()
        for subscription in tuple(self._subscribers):
            subscription._fail(FeedClosed())

    async def _stop(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow(self, after: int) -> None:
        try:
            async for batch in self.store.subscribe_all(after, self.batch_size):
                self.position = batch[-1].position
                for subscription in tuple(self._subscribers):
                    subscription._offer(batch, self.position)
        except Exception as error:
            # The subscribers see the error; the next subscription starts a new follower.
            log.warning("event feed stopped: %s", error)
            for subscription in tuple(self._subscribers):
                subscription._fail(error)
