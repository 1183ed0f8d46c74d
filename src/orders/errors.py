"""The Orders service's own errors (the framework's are in :mod:`cqrskit.errors`).

Entrypoints map them to their medium in one place each: HTTP statuses in
:mod:`orders.http.problems`, exit codes in :mod:`orders.cli`.
"""

from __future__ import annotations

__all__ = [
    "ConsistencyTimeout",
    "InvalidCursor",
    "InvalidQuery",
    "OrderNotFound",
    "PartitionedReadModel",
    "TokenBeyondHead",
    "UnknownProjection",
]


class OrderNotFound(Exception):
    """No order with this id: the read model (or the event store) has none."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class InvalidQuery(Exception):
    """A query's parameters are invalid (a page size out of range, a malformed cursor)."""


class InvalidCursor(InvalidQuery):
    """A pagination cursor that this service did not hand out."""


class ConsistencyTimeout(Exception):
    """The read model did not reach a consistency token within the configured wait."""

    def __init__(self, position: int, timeout: float) -> None:
        super().__init__(
            f"the read model has not caught up with consistency token {position} "
            f"within {timeout:g} s; retry later"
        )
        self.position = position
        self.timeout = timeout


class TokenBeyondHead(InvalidQuery):
    """A consistency token past the end of the event log: no write of this store made it."""

    def __init__(self, position: int, head: int) -> None:
        super().__init__(
            f"consistency token {position} is beyond the end of the event log (position"
            f" {head}): this store never handed it out (a token of another store, or after a"
            " reset); send the token of a write to this store, or none"
        )
        self.position = position
        self.head = head


class UnknownProjection(Exception):
    """A projection name that this service does not have."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"no projection named {name!r} (known: {', '.join(known)})")
        self.name = name


class PartitionedReadModel(Exception):
    """A rebuild of the read model as one projection, while partitioned workers keep it: their
    checkpoints would stay, and they would apply again the events the rebuild replayed."""

    def __init__(self, checkpoints: list[str]) -> None:
        shown = ", ".join(checkpoints[:3]) + (", ..." if len(checkpoints) > 3 else "")
        super().__init__(
            f"the read model is kept by partitioned workers (checkpoints {shown}): rebuild it"
            " with `orders projections rebuild --nats URL` (and --stream, as the workers run),"
            " which resets every partition at once"
        )
        self.checkpoints = checkpoints
