"""The read-store contract (``cqrskit.testing.read_store_contract``) on every test backend."""

from cqrskit.testing.read_store_contract import *  # noqa: F403
