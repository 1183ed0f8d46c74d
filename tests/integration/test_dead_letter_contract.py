"""The dead-letter contract (``cqrskit.testing.dead_letter_contract``) on every test backend."""

from cqrskit.testing.dead_letter_contract import *  # noqa: F403
