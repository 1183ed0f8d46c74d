"""Migration steps, as every backend uses them: numbered 1, 2, 3, …, applied once, in order."""

from __future__ import annotations

import pytest

from cqrskit.migrations import Migration, latest_version, pending

STEPS = (
    Migration(1, "first", ("CREATE TABLE a (x)",)),
    Migration(2, "second", ("CREATE TABLE b (x)", "CREATE INDEX b_x ON b (x)")),
    Migration(3, "third", ("CREATE TABLE c (x)",)),
)


def test_a_schema_is_at_the_latest_version_once_every_step_is_applied() -> None:
    assert latest_version(STEPS) == 3
    assert latest_version(()) == 0


def test_only_the_steps_after_the_version_reached_are_pending() -> None:
    assert pending(STEPS, 0) == list(STEPS)
    assert pending(STEPS, 1) == [STEPS[1], STEPS[2]]
    assert pending(STEPS, 3) == []


@pytest.mark.parametrize("versions", [(1, 3), (2, 3), (1, 1), (2, 1)])
def test_steps_with_gaps_or_out_of_order_are_refused(versions: tuple[int, ...]) -> None:
    steps = [Migration(version, f"step {version}", ()) for version in versions]
    with pytest.raises(ValueError, match="numbered"):
        latest_version(steps)
