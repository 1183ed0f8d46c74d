"""Schema migrations, the same shape for every backend: numbered steps applied once, in order.

A backend keeps a tuple of :class:`Migration` per schema, numbered 1, 2, 3, … with no gaps, and
records in the database the version it has reached. This module knows no database: each
backend runs the statements with its own driver and records the version in its own table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Migration", "latest_version", "pending"]


@dataclass(frozen=True)
class Migration:
    """One step of a schema: its statements run once, in order, in one transaction.

    Append new steps at the end of a backend's list; never edit a step that has shipped.
    """

    version: int
    description: str
    statements: tuple[str, ...]


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a schema has once every step of ``migrations`` is applied.

    Raises :class:`ValueError` unless the steps are numbered 1, 2, 3, … in order.
    """
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, … in order, not {versions}")
    return len(versions)


def pending(migrations: Sequence[Migration], current: int) -> list[Migration]:
    """The steps of ``migrations`` that a schema at version ``current`` still needs, in order."""
    return [migration for migration in migrations if migration.version > current]
