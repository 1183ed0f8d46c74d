"""Server-sent events: a response that writes frames as they come, for as long as the client
listens.

Writes are batched: after one write, whatever arrives in the next ``write_interval`` goes out
in one write, so a hundred clients watching a busy log cost the service a few writes per client
per second rather than one per event. Silence is broken by a comment line every ``heartbeat``
seconds, so that proxies and browsers keep an idle connection open. A client whose source cuts
it off (it fell too far behind, see :class:`cqrskit.feed.SubscriberTooSlow`) is disconnected;
browsers reconnect by themselves and, with ``Last-Event-ID``, resume where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cqrskit.feed import FeedClosed

__all__ = [
    "EventStreamResponse",
    "FrameSource",
    "MergedFrames",
    "StreamMetrics",
    "StreamSettings",
    "Streams",
    "frame",
]

log = logging.getLogger("orders.http.sse")
HEARTBEAT = b": keep-alive\n\n"


@dataclass(frozen=True)
class StreamSettings:
    """How the service writes its event streams."""

    #: seconds of silence after which a comment line keeps the connection open
    heartbeat: float = 15.0
    #: least time between two writes to one client (seconds): events in between are batched
    write_interval: float = 0.05
    #: events a client may fall behind the live log before it is disconnected
    buffer: int = 10_000
    #: how long a browser waits before it reconnects (the ``retry:`` field, milliseconds)
    retry_ms: int = 1000


class Streams:
    """The service's open event streams: their settings, counts, and the shutdown that ends
    them (uvicorn waits for open responses to finish; these never would by themselves)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.open = 0
        self.cut_off = 0
        self._closing: asyncio.Event | None = None

    @property
    def closing(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    def close(self) -> None:
        """End every open stream (the server is shutting down)."""
        self.closing.set()


class StreamMetrics(Collector):
    """Prometheus figures of the open streams: how many, and how many clients were cut off."""

    def __init__(self, streams: Streams) -> None:
        self._streams = streams

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily(
            "orders_sse_clients", "Server-sent-event streams open now (event log, live queries)."
        )
        open_now.add_metric([], self._streams.open)
        yield open_now
        cut_off = CounterMetricFamily(
            "orders_sse_clients_cut_off",
            "Stream clients disconnected for falling too far behind the event log.",
        )
        cut_off.add_metric([], self._streams.cut_off)
        yield cut_off


class FrameSource(Protocol):
    """Where a stream's frames come from."""

    async def next_frames(self, timeout: float | None) -> bytes:
        """The frames that are ready (waiting up to ``timeout`` seconds); ``b""`` if none."""
        ...

    async def wait_cut_off(self) -> BaseException:
        """Return once the source can give no more frames: the client must be let go."""
        ...


class MergedFrames:
    """Several sources as one stream (one connection: browsers allow few per host)."""

    def __init__(self, sources: list[FrameSource]) -> None:
        self._sources = sources
        self._pending: dict[int, asyncio.Task[bytes]] = {}

    async def next_frames(self, timeout: float | None) -> bytes:
        for index, source in enumerate(self._sources):
            if index not in self._pending:
                self._pending[index] = asyncio.create_task(source.next_frames(None))
        await asyncio.wait(
            self._pending.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        ready = [index for index, task in self._pending.items() if task.done()]
        return b"".join(self._pending.pop(index).result() for index in sorted(ready))

    async def wait_cut_off(self) -> BaseException:
        waits = [asyncio.create_task(source.wait_cut_off()) for source in self._sources]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in waits:
                task.cancel()

    async def close(self) -> None:
        """Stop waiting on the sources (call before closing them)."""
        for task in self._pending.values():
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._pending.clear()


def frame(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One server-sent event. ``data`` must be a single line (compact JSON is)."""
    head = b""
    if id is not None:
        head += b"id: " + id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


class EventStreamResponse(Response):
    """A ``text/event-stream`` response over the :class:`FrameSource` that ``open_source``
    opens (and closes when the response ends)."""

    media_type = "text/event-stream"

    def __init__(
        self, streams: Streams, open_source: Callable[[], AbstractAsyncContextManager[FrameSource]]
    ) -> None:
        # Not Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
        ]
        self.streams = streams
        self.open_source = open_source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams = self.streams
        streams.open += 1
        try:
            async with self.open_source() as source:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                retry = f"retry: {streams.settings.retry_ms}\n\n".encode()
                await send({"type": "http.response.body", "body": retry, "more_body": True})
                await self._serve(source, receive, send)
        finally:
            streams.open -= 1

    async def _serve(self, source: FrameSource, receive: Receive, send: Send) -> None:
        writer = asyncio.create_task(self._write(source, send))
        cut_off = asyncio.create_task(source.wait_cut_off())
        gone = asyncio.create_task(_disconnected(receive))
        closing = asyncio.create_task(self.streams.closing.wait())
        tasks = {writer, cut_off, gone, closing}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if gone in done:
            return
        error = cut_off.result() if cut_off in done else None
        if error is None and writer in done:
            error = writer.exception()
        if error is not None and not isinstance(error, FeedClosed):
            # Leaving the response unfinished makes the server drop the connection, which is
            # the point: the client's writes may be blocked on a full socket.
            self.streams.cut_off += 1
            log.warning("event stream client disconnected: %s", error)
            return
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, source: FrameSource, send: Send) -> None:
        settings = self.streams.settings
        written = 0.0
        while True:
            pause = written + settings.write_interval - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # let events gather into one write
            frames = await source.next_frames(settings.heartbeat)
            await send(
                {"type": "http.response.body", "body": frames or HEARTBEAT, "more_body": True}
            )
            written = time.monotonic()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
