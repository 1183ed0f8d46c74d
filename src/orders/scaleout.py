"""Scale-out over NATS JetStream: the composition of the relay, node read models and
partitioned workers (``docs/scale-out.md``).

Each role is an :class:`~orders.app.OrdersApp` wired by :func:`orders.app.assemble_app` on
other parts; nats-py (the ``cqrskit[nats]`` extra) is loaded only when a role needs it.

- **relay** (:func:`run_relay`): the event store (PostgreSQL) is the outbox; one active relay
  publishes it to the JetStream stream ``settings.nats_stream``.
- **node** (:func:`open_app` with ``read_db_url``): commands go to the event store as usual;
  the projections read JetStream (a durable consumer per node and projection) into the node's
  own read store, and queries are answered from it.
- **partitioned workers** (:func:`open_app` with ``partitioned``): the read model stays in
  PostgreSQL and is kept by a group of workers (:class:`cqrskit.PartitionedWorker`), each
  reading its partitions from JetStream; services answer queries from it and wait for every
  partition for a consistency token (:class:`cqrskit.PartitionedProgress`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from cqrskit import (
    Backend,
    ConfigurationError,
    PartitionedProgress,
    PartitionedWorker,
    Projection,
    WorkerGroups,
)
from cqrskit.backends import open_backend, open_read_store
from cqrskit.urls import normalise_url, redact
from orders.app import OrdersApp, Settings, assemble_app, build_app
from orders.projections import PROJECTIONS

if TYPE_CHECKING:
    from cqrskit.nats import JetStreamLog

__all__ = [
    "build_node_app",
    "build_partitioned_app",
    "node_name_for",
    "open_app",
    "open_jetstream",
    "run_relay",
]


async def open_app(settings: Settings) -> OrdersApp:
    """The application ``settings`` describe: a node when they name a read database of its
    own (``read_db_url``), one over a read model kept by partitioned workers
    (``partitioned``), else the plain application (:func:`orders.app.build_app`)."""
    if settings.read_db_url is not None:
        return await build_node_app(settings)
    if settings.partitioned:
        return await build_partitioned_app(settings)
    return await build_app(settings)


async def open_jetstream(settings: Settings, role: str) -> JetStreamLog:
    """The JetStream log of ``settings`` (created if missing); :class:`ConfigurationError`
    without a NATS URL or without the ``nats`` extra."""
    if settings.nats_url is None:
        raise ConfigurationError(f"the {role} needs a NATS server: --nats or CQRSKIT_NATS_URL")
    try:
        from cqrskit.nats import JetStreamLog
    except ModuleNotFoundError as error:
        if error.name != "nats":
            raise
        raise ConfigurationError(
            "NATS support is not installed: pip install 'cqrskit[nats]'"
        ) from error
    return await JetStreamLog.open(
        settings.nats_url, stream=settings.nats_stream, name=f"orders-{role}"
    )


def node_name_for(settings: Settings) -> str:
    """The node's name: ``settings.node_name``, else the host name and a digest of the read
    database's path (stable across restarts, distinct for two nodes on one machine)."""
    if settings.node_name:
        return settings.node_name
    where = normalise_url(settings.read_db_url or "")
    if where.startswith("sqlite:///"):
        where = str(Path(where.removeprefix("sqlite:///").split("?")[0]).resolve())
    digest = hashlib.sha256(where.encode()).hexdigest()[:10]
    return f"{socket.gethostname()}-{digest}"


async def build_node_app(settings: Settings) -> OrdersApp:
    """A query node: commands to ``settings.db_url``, read model in ``settings.read_db_url``,
    fed from JetStream, with the event store as history for what the stream no longer holds.

    A restarted node resumes from its own checkpoints; a new one builds its read model from
    scratch. Consistency tokens wait for this node's read model.
    """
    assert settings.read_db_url is not None
    from cqrskit.nats import JetStreamSource

    async with contextlib.AsyncExitStack() as opened:
        central = await open_backend(settings.db_url)
        opened.push_async_callback(central.close)
        read = await open_read_store(settings.read_db_url)
        opened.push_async_callback(read.close)
        log = await open_jetstream(settings, "node")
        opened.push_async_callback(log.close)
        node = node_name_for(settings)

        def source_of(projection: Projection) -> JetStreamSource:
            return JetStreamSource(log, central.events, consumer=f"{node}_{projection.name}")

        backend = Backend(settings.read_db_url, central.events, read, central.snapshots)
        app = await assemble_app(
            settings,
            backend,
            source_of=source_of,
            use_lease=False,  # the node's read model is its own: no other process runs it
            closers=[central.read.close, log.close],
        )
        opened.pop_all()
        return app
    raise AssertionError("unreachable")  # pragma: no cover


async def build_partitioned_app(settings: Settings) -> OrdersApp:
    """The application over a read model in PostgreSQL kept by partitioned workers: commands
    and queries as usual, consistency tokens waiting for every partition, and a worker of the
    group (group: the JetStream stream's name) that :meth:`OrdersApp.start_projections` runs.

    Raises :class:`ConfigurationError` for a store other than PostgreSQL (one whose read store
    holds worker groups) or without a NATS URL.
    """
    from cqrskit.nats import JetStreamSource

    async with contextlib.AsyncExitStack() as opened:
        backend = await open_backend(settings.db_url)
        opened.push_async_callback(backend.close)
        if not isinstance(backend.read, WorkerGroups):
            raise ConfigurationError(
                f"partitioned workers keep the read model in PostgreSQL, not in"
                f" {redact(settings.db_url)}"
            )
        log = await open_jetstream(settings, "worker")
        opened.push_async_callback(log.close)

        def source_of(projection: Projection, partition: int) -> JetStreamSource:
            consumer = f"worker_{projection.name}_{partition}"
            return JetStreamSource(log, backend.events, consumer=consumer, partition=partition)

        app = await assemble_app(settings, backend, projections=(), closers=[log.close])
        app.partition_worker = PartitionedWorker(
            PROJECTIONS,
            group=settings.nats_stream,
            partitions=log.partitions,
            source_of=source_of,
            events=backend.events,
            read_store=backend.read,
            codec=app.codec,
            batch_size=settings.projection_batch_size,
            on_error=settings.projection_errors,
        )

        async def published(partition: int | None) -> int:
            """The newest position JetStream holds (of ``partition``, or of every one)."""
            source = JetStreamSource(log, backend.events, consumer="heads", partition=partition)
            return await source.head_position()

        app.partition_progress = PartitionedProgress(
            backend.events,
            backend.read,
            [p.name for p in PROJECTIONS],
            log.partitions,
            published=published,
        )
        await backend.read.setup([table for p in PROJECTIONS for table in p.tables])
        opened.pop_all()
        return app
    raise AssertionError("unreachable")  # pragma: no cover


async def run_relay(orders_app: OrdersApp, stop: asyncio.Event) -> None:
    """Relay the event store to JetStream until ``stop`` is set (standing by while another
    relay holds the lease). Raises what stops the relay otherwise."""
    from cqrskit.nats import Relay

    log = await open_jetstream(orders_app.settings, "relay")
    relay = Relay(
        orders_app.backend.events,
        orders_app.backend.read,
        log,
        batch_size=orders_app.settings.projection_batch_size,
    )
    task = asyncio.create_task(relay.run(), name="relay")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
    finally:
        for pending in (task, stopping):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await log.close()
