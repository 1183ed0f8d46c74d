from __future__ import annotations

import time

from cqrskit.ids import uuid7


def test_uuid7_has_version_variant_and_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    assert before <= value.int >> 80 <= after


def test_uuid7_ids_are_unique_and_increasing() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids, key=lambda u: u.bytes)
