"""Stores that fail on demand: any event store or read store, wrapped.

Set ``failure`` to an exception and every operation raises it (a subscription raises it at its
next batch) until ``failure`` is None again; ``only`` limits the failure to the operations it
names; ``failed`` counts the calls that failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from cqrskit import EventStore, ReadStore, RecordedEvent, ViewTransaction


class _Flaky:
    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.only: set[str] | None = None
        self.failed = 0

    def check(self, operation: str) -> None:
        if self.failure is not None and (self.only is None or operation in self.only):
            self.failed += 1
            raise self.failure


class FlakyEventStore(_Flaky):
    """``inner``, failing while ``failure`` is set."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.check(name)
            return await method(*args, **kwargs)

        return call

    async def subscribe_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[RecordedEvent]]:
        self.check("subscribe_all")
        async for batch in self.inner.subscribe_all(after, batch_size):
            self.check("subscribe_all")
            yield batch

    async def close(self) -> None:
        await self.inner.close()


class FlakyReadStore(_Flaky):
    """``inner``, failing while ``failure`` is set."""

    def __init__(self, inner: ReadStore) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.check(name)
            return await method(*args, **kwargs)

        return call

    async def apply(
        self,
        projection: str,
        expected: int,
        position: int,
        write: Callable[[ViewTransaction], None],
    ) -> None:
        self.check("apply")
        await self.inner.apply(projection, expected, position, write)

    async def close(self) -> None:
        await self.inner.close()
