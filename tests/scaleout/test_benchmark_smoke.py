"""The scale-out benchmark runs end to end at a tiny size and verifies every figure (the
stream holds every event once, every read model equals a full replay). It never looks at how
fast anything was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from benchmarks.scaleout import measure, section

from tests.support.jetstream import nats_url
from tests.support.postgres import fresh_url

pytestmark = pytest.mark.postgres


def test_the_scaleout_benchmark_verifies_its_figures(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sizes = {"orders": 30, "workers": [1, 2], "lag_rate": 20.0, "lag_seconds": 0.5}

    result = asyncio.run(measure(fresh_url(request), nats_url(), sizes, tmp_path))

    assert result["verified"], result
    assert [run["workers"] for run in result["workers"]] == [1, 2]
    assert result["relay"]["events"] == 90
    assert "| 2 partitioned worker process(es)" in section(result)
