"""The snapshot-store contract (``cqrskit.testing.snapshot_store_contract``) on every backend."""

from cqrskit.testing.snapshot_store_contract import *  # noqa: F403
