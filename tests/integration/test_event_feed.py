"""The event feed: one follower of the log shared by many subscribers, on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import msgspec
import pytest

from cqrskit import NO_STREAM, Backend, NewEvent, RecordedEvent
from cqrskit.feed import EventFeed, FeedSubscription, SubscriberTooSlow

DEADLINE = 20.0  # seconds before a waiting test fails instead of hanging


def new_events(count: int) -> list[NewEvent]:
    return [
        NewEvent(
            event_id=uuid4(),
            event_type="FeedTested",
            schema_version=1,
            data=msgspec.json.encode({"n": n}),
            metadata=b"{}",
            recorded_at=datetime.now(UTC),
        )
        for n in range(count)
    ]


async def append(backend: Backend, stream: str, count: int, version: int) -> int:
    """Append ``count`` events to ``stream`` one by one; return the new version."""
    for event in new_events(count):
        await backend.events.append(stream, [event], version or NO_STREAM)
        version += 1
    return version


async def collect(subscription: FeedSubscription, stream: str, count: int) -> list[RecordedEvent]:
    """The first ``count`` events of ``stream`` the subscription hands out (others skipped)."""
    found: list[RecordedEvent] = []
    seen: list[int] = []
    async with asyncio.timeout(DEADLINE):
        while len(found) < count:
            for event in await subscription.next_events(None):
                seen.append(event.position)
                if event.stream_id == stream:
                    found.append(event)
    assert seen == sorted(set(seen)), "positions repeated or out of order"
    return found


async def test_a_subscriber_from_the_past_gets_the_history_then_live_events_once_each(
    backend: Backend,
) -> None:
    stream = f"feed-{uuid4()}"
    start = await backend.events.head_position()
    version = await append(backend, stream, 30, 0)
    feed = EventFeed(backend.events, batch_size=7)
    try:
        async with feed.subscribe(after=start) as subscription:
            # Appends go on while the subscriber is still reading its history.
            writer = asyncio.create_task(append(backend, stream, 30, version))
            found = await collect(subscription, stream, 60)
            await writer
    finally:
        await feed.close()
    assert [e.stream_version for e in found] == list(range(1, 61))


async def test_a_subscriber_from_now_sees_only_new_events(backend: Backend) -> None:
    stream = f"feed-{uuid4()}"
    version = await append(backend, stream, 3, 0)
    feed = EventFeed(backend.events)
    try:
        async with feed.subscribe() as subscription:
            await append(backend, stream, 2, version)
            found = await collect(subscription, stream, 2)
    finally:
        await feed.close()
    assert [e.stream_version for e in found] == [4, 5]


async def test_a_live_subscriber_that_falls_behind_is_cut_off_and_others_are_not(
    backend: Backend,
) -> None:
    stream = f"feed-{uuid4()}"
    feed = EventFeed(backend.events)
    try:
        async with (
            feed.subscribe(buffer=5) as slow,
            feed.subscribe() as keen,
        ):
            assert await slow.next_events(0) == []  # live, and then it stops reading
            await append(backend, stream, 12, 0)  # the writer never waits for the slow one
            assert len(await collect(keen, stream, 12)) == 12
            async with asyncio.timeout(DEADLINE):
                error = await slow.wait_cut_off()
            assert isinstance(error, SubscriberTooSlow)
            with pytest.raises(SubscriberTooSlow):
                await slow.next_events(0)
    finally:
        await feed.close()


async def test_a_subscriber_reading_history_with_a_small_buffer_loses_nothing(
    backend: Backend,
) -> None:
    stream = f"feed-{uuid4()}"
    start = await backend.events.head_position()
    version = await append(backend, stream, 20, 0)
    feed = EventFeed(backend.events, batch_size=3)
    try:
        async with feed.subscribe(after=start, buffer=2) as subscription:
            writer = asyncio.create_task(append(backend, stream, 20, version))
            found = await collect(subscription, stream, 40)
            await writer
    finally:
        await feed.close()
    assert [e.stream_version for e in found] == list(range(1, 41))


async def test_the_feed_follows_the_log_only_while_someone_subscribes(backend: Backend) -> None:
    feed = EventFeed(backend.events)
    assert not feed.following
    async with feed.subscribe(), feed.subscribe():
        assert feed.following
        assert feed.subscriber_count == 2
    assert not feed.following
    assert feed.subscriber_count == 0
    await feed.close()
