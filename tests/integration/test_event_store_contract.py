"""The event-store contract (``cqrskit.testing.event_store_contract``) on every test backend."""

from cqrskit.testing.event_store_contract import *  # noqa: F403
