"""The event log in a JetStream stream: connecting, creating the stream, reading its messages,
publishing in order, and pull consumers.

One :class:`JetStreamLog` per process and NATS connection. nats-py reconnects by itself after a
server restart (forever, every ``reconnect_wait``); requests made meanwhile fail with an error
this module turns into :class:`~cqrskit.StoreUnavailable`, and callers retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from cqrskit.errors import ConfigurationError, StoreUnavailable
from cqrskit.messages import RecordedEvent
from cqrskit.nats import _wire
from cqrskit.partitions import MAX_PARTITIONS
from cqrskit.urls import redact

log = logging.getLogger("cqrskit.nats")

T = TypeVar("T")
DEFAULT_STREAM = "cqrskit"
DEFAULT_PARTITIONS = 16
#: how long JetStream remembers a message id to drop a duplicate publish (seconds)
DUPLICATE_WINDOW = 120.0


@dataclass(frozen=True)
class StreamState:
    """What the stream holds: ``messages`` messages, sequences ``first..last``."""

    first_sequence: int
    last_sequence: int
    messages: int

    @property
    def empty(self) -> bool:
        return self.messages == 0


class PublishRefused(Exception):
    """JetStream refused a publish (wrong expected sequence: someone else published)."""


async def cancellable(call: Awaitable[T]) -> T:
    """Await a nats-py ``call`` so that a cancellation is never lost.

    nats-py waits with ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that
    arrives as the awaited message does: a cancelled consumer would read on, and whoever
    cancelled it wait for ever. Run in a task of its own, the call is abandoned instead.
    """
    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait((task,))
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_forget)
        raise
    return task.result()


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so that asyncio does not log it as lost."""
    if not task.cancelled():
        task.exception()


@contextlib.contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """NATS errors as :class:`StoreUnavailable`, naming the server (never its password)."""
    try:
        yield
    except (nats.errors.Error, OSError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        raise StoreUnavailable(f"NATS at {where}: {redact(detail)}") from error


class JetStreamLog:
    """A JetStream stream that holds the event log (see :mod:`cqrskit.nats._wire`).

    ``stream`` names the stream and prefixes its subjects, so that deployments sharing a NATS
    server never see each other's events. The partition count is fixed when the stream is
    created and recorded in its description; every consumer reads it from there.
    """

    def __init__(self, connection: Client, url: str, stream: str, partitions: int) -> None:
        self._nc = connection
        self._js: JetStreamContext = connection.jetstream()
        self.url = url
        self.where = redact(url)
        self.stream = stream
        self.partitions = partitions

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        partitions: int = DEFAULT_PARTITIONS,
        create: bool = True,
        max_age: float | None = None,
        name: str | None = None,
    ) -> JetStreamLog:
        """Connect to ``url`` and find (or, with ``create``, create) the stream.

        ``partitions`` is used when the stream is created; an existing stream keeps its own.
        ``max_age`` (seconds) limits how long the stream keeps events (default: forever; older
        history is then read from the event store). Raises :class:`StoreUnavailable` when NATS
        cannot be reached or has no JetStream, :class:`ConfigurationError` for a bad name or a
        stream that is not a cqrskit log.
        """
        _wire.check_stream_name(stream)
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ConfigurationError(f"partitions must be between 1 and {MAX_PARTITIONS}")
        where = redact(url)
        with translate_errors(where):
            connection = await nats.connect(
                url,
                name=name or f"cqrskit:{stream}",
                connect_timeout=5,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_log_error,
                disconnected_cb=_announce("disconnected from", where),
                reconnected_cb=_announce("reconnected to", where),
            )
        try:
            found = await cls._find_or_create(
                connection, where, stream, partitions, max_age, create
            )
        except BaseException:
            await connection.close()
            raise
        return cls(connection, url, stream, found)

    @staticmethod
    async def _find_or_create(
        connection: Client,
        where: str,
        stream: str,
        partitions: int,
        max_age: float | None,
        create: bool,
    ) -> int:
        js = connection.jetstream()
        with translate_errors(where):
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                if not create:
                    raise StoreUnavailable(f"NATS at {where} has no stream {stream!r}") from None
                info = await js.add_stream(_stream_config(stream, partitions, max_age))
                log.info("created JetStream stream %s (%d partitions)", stream, partitions)
        recorded = _wire.partitions_in(info.config.description)
        if recorded is None or info.config.subjects != [_wire.all_subjects(stream)]:
            raise ConfigurationError(
                f"JetStream stream {stream!r} at {where} is not a cqrskit event log"
            )
        return recorded

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.close()

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    # -- reading --

    async def state(self) -> StreamState:
        with translate_errors(self.where):
            info = await cancellable(self._js.stream_info(self.stream))
        return StreamState(info.state.first_seq, info.state.last_seq, info.state.messages)

    async def envelope_at(self, sequence: int) -> _wire.Envelope | None:
        """The event at ``sequence``, or the first one after it; None past the end."""
        with translate_errors(self.where):
            try:
                raw = await cancellable(
                    self._js.get_msg(
                        self.stream,
                        seq=sequence,
                        subject=_wire.all_subjects(self.stream),
                        next=True,
                    )
                )
            except nats.js.errors.NotFoundError:
                return None
        assert raw.seq is not None
        return _wire.envelope_of(raw.headers, raw.data or b"", raw.seq)

    async def last_envelope(self, subject: str | None = None) -> _wire.Envelope | None:
        """The newest event (on ``subject``, a filter such as one partition's), if any."""
        with translate_errors(self.where):
            try:
                raw = await cancellable(
                    self._js.get_last_msg(self.stream, subject or _wire.all_subjects(self.stream))
                )
            except nats.js.errors.NotFoundError:
                return None
        assert raw.seq is not None
        return _wire.envelope_of(raw.headers, raw.data or b"", raw.seq)

    async def sequence_after(self, position: int) -> tuple[int, _wire.Envelope | None]:
        """The sequence of the first event whose position is greater than ``position`` (the
        stream's next sequence if there is none), and that event.

        A binary search: positions increase with sequences (the relay publishes in order), so
        this costs about log2(messages) reads.
        """
        state = await self.state()
        if state.empty:
            return state.last_sequence + 1, None
        low, high = state.first_sequence, state.last_sequence + 1
        found: _wire.Envelope | None = None
        while low < high:
            middle = (low + high) // 2
            envelope = await self.envelope_at(middle)
            if envelope is None:
                high = middle
            elif envelope.event.position > position:
                high, found = middle, envelope
            else:
                low = envelope.sequence + 1
        if found is not None and found.sequence != low:
            found = await self.envelope_at(low)
        return low, found

    # -- publishing --

    async def publish(
        self,
        events: Sequence[RecordedEvent],
        headers: Sequence[dict[str, str]],
        after_sequence: int,
        timeout: float = 10.0,
    ) -> int:
        """Publish ``events`` in order, pipelined, and wait until JetStream acknowledged them
        all; return the stream sequence of the last.

        Each message expects the stream's last sequence to be the one before it
        (``after_sequence`` for the first), so JetStream stores them in this order or refuses
        them: a message after a refused one is refused too, and nothing is ever reordered.
        Raises :class:`PublishRefused` on a refusal and :class:`StoreUnavailable` when NATS
        cannot be reached or does not answer within ``timeout`` seconds.
        """
        futures = []
        with translate_errors(self.where):
            for offset, (event, header) in enumerate(zip(events, headers, strict=True)):
                header[_wire.EXPECTED_LAST_SEQUENCE] = str(after_sequence + offset)
                subject = _wire.subject_for(self.stream, self.partitions, event)
                futures.append(await self._js.publish_async(subject, event.data, headers=header))
            try:
                async with asyncio.timeout(timeout):
                    acks = await asyncio.gather(*futures)
            except nats.js.errors.APIError as error:
                raise PublishRefused(str(error)) from error
            finally:
                for future in futures:
                    future.cancel()
        for offset, ack in enumerate(acks):
            if ack.duplicate or ack.seq != after_sequence + offset + 1:
                raise PublishRefused(
                    f"message {offset} stored at {ack.seq}, duplicate={ack.duplicate}"
                )
        return after_sequence + len(events)

    # -- consuming --

    async def pull_consumer(
        self,
        name: str,
        filter_subject: str,
        start_sequence: int,
        *,
        durable: bool,
        max_ack_pending: int = 10_000,
    ) -> JetStreamContext.PullSubscription:
        """A pull subscription on consumer ``name``, created anew to deliver ``filter_subject``
        from ``start_sequence`` on.

        A durable consumer (acks: each covers every earlier message) outlives a NATS restart
        and is removed after a day unused; an ephemeral one needs no acks and is removed by
        JetStream a minute after its last use.
        """
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start_sequence, 1),
            filter_subject=filter_subject,
        )
        if durable:
            config.durable_name = name
            config.ack_policy = AckPolicy.ALL
            config.ack_wait = 60.0
            config.max_ack_pending = max_ack_pending
            config.inactive_threshold = 24 * 3600.0
        else:
            config.name = name
            config.ack_policy = AckPolicy.NONE
            config.inactive_threshold = 60.0
            config.mem_storage = True
        with translate_errors(self.where):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await cancellable(self._js.delete_consumer(self.stream, name))
            await cancellable(self._js.add_consumer(self.stream, config))
            return await cancellable(self._js.pull_subscribe_bind(name=name, stream=self.stream))

    async def fetch(
        self, subscription: JetStreamContext.PullSubscription, batch: int, timeout: float
    ) -> list[Msg]:
        """Up to ``batch`` messages, waiting at most ``timeout`` seconds for the first."""
        with translate_errors(self.where):
            try:
                return await cancellable(subscription.fetch(batch, timeout=timeout))
            except (nats.errors.TimeoutError, TimeoutError):
                # nats-py raises either when nothing came in time (the builtin one when the
                # fetch's deadline ran out between its two requests): not an outage
                return []

    async def drop(self, subscription: JetStreamContext.PullSubscription, name: str) -> None:
        """Unsubscribe, and delete consumer ``name`` (best effort: NATS may be away)."""
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        with contextlib.suppress(Exception):
            await self._js.delete_consumer(self.stream, name)

    async def ack(self, message: Msg) -> None:
        """Acknowledge ``message`` and every earlier one (best effort: a lost ack only means
        a redelivery, which consumers drop)."""
        with contextlib.suppress(Exception):
            await message.ack()


def _stream_config(stream: str, partitions: int, max_age: float | None) -> StreamConfig:
    return StreamConfig(
        name=stream,
        description=_wire.describe(partitions),
        subjects=[_wire.all_subjects(stream)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        duplicate_window=DUPLICATE_WINDOW,
    )


async def _log_error(error: Exception) -> None:
    log.warning("NATS: %s", redact(str(error) or type(error).__name__))


def _announce(what: str, where: str) -> Callable[[], Awaitable[None]]:
    async def callback() -> None:
        log.warning("%s NATS at %s", what, where)

    return callback
