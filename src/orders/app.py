"""The composition root: builds the Orders application from settings.

Only this module and the entrypoints choose backends (by URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cqrskit import Backend, CommandHandler, EventCodec, ProjectionRunner
from cqrskit.backends import open_backend
from orders.domain import (
    EVENT_TYPES,
    AddItem,
    CreateOrder,
    SubmitOrder,
    order_decider,
    stream_id,
)
from orders.projections import PROJECTIONS
from orders.queries import OrderQueries

DEFAULT_DB_URL = "sqlite:///.cqrskit/orders.db"


@dataclass(frozen=True)
class Settings:
    """Everything the Orders application can be configured with."""

    db_url: str = DEFAULT_DB_URL
    #: how long a query carrying a consistency token waits for the read model (seconds)
    consistency_timeout: float = 5.0
    #: events per projection transaction
    projection_batch_size: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``CQRSKIT_DB`` and ``CQRSKIT_CONSISTENCY_TIMEOUT``, then ``overrides``
        (a None override keeps the environment's value)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "CQRSKIT_DB" in env:
            values["db_url"] = env["CQRSKIT_DB"]
        if "CQRSKIT_CONSISTENCY_TIMEOUT" in env:
            values["consistency_timeout"] = float(env["CQRSKIT_CONSISTENCY_TIMEOUT"])
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class OrdersApp:
    """The wired application: command handling, projections and queries over one backend."""

    settings: Settings
    backend: Backend
    codec: EventCodec
    commands: CommandHandler
    queries: OrderQueries
    runners: tuple[ProjectionRunner, ...]
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def setup_read_model(self) -> None:
        """Create the read-model tables and load the projections' checkpoints."""
        for runner in self.runners:
            await runner.setup()

    async def catch_up(self) -> None:
        """Run every projection up to the current head of the event store, then return.

        One after the other: side by side they would contend for the read model's single
        writer (measured slower on SQLite).
        """
        for runner in self.runners:
            await runner.catch_up()

    async def rebuild(self) -> None:
        """Empty every read model and replay the whole event log into it."""
        for runner in self.runners:
            await runner.rebuild()

    def start_projections(self) -> None:
        """Run the projections in the background (catch up, then follow) until :meth:`close`."""
        for runner in self.runners:
            task = asyncio.create_task(runner.run(), name=f"projection:{runner.projection.name}")
            self._tasks.append(task)

    @property
    def projections_running(self) -> bool:
        return bool(self._tasks) and all(not task.done() for task in self._tasks)

    async def wait_for_position(self, position: int, timeout: float | None = None) -> bool:
        """Wait until every projection has applied events up to ``position``.

        A projection running in this process wakes the wait as soon as it commits a batch; one
        running elsewhere (an ``orders project`` worker, another process holding its lease) is
        followed through the checkpoint stored in the read store. Returns False when
        ``timeout`` (default: the configured consistency timeout) runs out first.
        """
        timeout = self.settings.consistency_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for runner in self.runners:
            if not await self._wait_for_runner(runner, position, deadline):
                return False
        return True

    async def _wait_for_runner(
        self, runner: ProjectionRunner, position: int, deadline: float
    ) -> bool:
        # A runner working in this process knows its checkpoint without a query; any other
        # (a standby waiting for the lease, a worker elsewhere) is polled in the read store.
        pause = 0.001
        while True:
            remaining = deadline - time.monotonic()
            if runner.status.running:
                if await runner.wait_for(position, max(0.0, min(remaining, 0.05))):
                    return True
            elif await self.backend.read.checkpoint(runner.projection.name) >= position:
                return True
            else:
                await asyncio.sleep(max(0.0, min(pause, remaining)))
                pause = min(pause * 2, 0.05)
            if time.monotonic() >= deadline:
                return False

    async def stop_projections(self) -> None:
        """Stop the background projections; a batch in flight commits or rolls back whole."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def close(self) -> None:
        """Stop background projections and close the backend."""
        await self.stop_projections()
        await self.backend.close()


async def build_app(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> OrdersApp:
    """Open the backend named by ``settings.db_url`` and wire the Orders application on it."""
    backend = await open_backend(settings.db_url)
    codec = EventCodec(EVENT_TYPES)
    commands = CommandHandler(backend.events, codec, clock=clock)
    commands.register(
        CreateOrder, order_decider, stream_id=lambda c: stream_id(c.order_id), creates_stream=True
    )
    commands.register(AddItem, order_decider, stream_id=lambda c: stream_id(c.order_id))
    commands.register(SubmitOrder, order_decider, stream_id=lambda c: stream_id(c.order_id))
    runners = tuple(
        ProjectionRunner(
            projection,
            backend.events,
            backend.read,
            codec,
            batch_size=settings.projection_batch_size,
        )
        for projection in PROJECTIONS
    )
    app = OrdersApp(settings, backend, codec, commands, OrderQueries(backend.read), runners)
    await app.setup_read_model()
    return app
