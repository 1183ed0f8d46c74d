"""The benchmark harness runs end to end at a tiny size and produces verified figures.

A smoke test only: it checks that every figure was measured and verified (the store and the
read model hold the workload's results on both sides) and that the reports are written. It
never looks at how fast anything was.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.__main__ import main
from benchmarks.config import QUERIES

READ_FIGURES = [
    "projection_build",
    "load_p50",
    "load_p99",
    *(f"query_{q}_p{p}" for q in QUERIES for p in (50, 99)),
]
BOTH_SIDES = ["commands_1", "commands_64", "batch_append", *READ_FIGURES, "lag_p99", "lag_rate"]
CQRSKIT_ONLY = [
    "rebuild_peak_mb",
    "rebuild_rate",
    "http_command_rps",
    "http_query_p99",
    "long_load_p99",
    "snapshot_speedup_p50",
]


def test_tiny_run_on_memory_and_sqlite_verifies_every_figure(tmp_path: Path) -> None:
    code = main(["--size", "tiny", "--backends", "memory,sqlite", "--out", str(tmp_path)])

    results = json.loads((tmp_path / "results.json").read_text())
    failed = [m for m in results["measurements"] if not m["verified"]]
    assert failed == []
    assert code == 0
    measured = {(m["figure"], m["backend"], m["side"]) for m in results["measurements"]}
    for figure in BOTH_SIDES:
        assert (figure, "memory", "cqrskit") in measured
        assert (figure, "sqlite", "cqrskit") in measured
        assert (figure, "sqlite", "eventsourcing") in measured
    for figure in CQRSKIT_ONLY:
        assert (figure, "sqlite", "cqrskit") in measured
    ratios = {(r["figure"], r["backend"]): r["ratio"] for r in results["rows"]}
    assert ratios[("commands_1", "sqlite")] is not None
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "| SQLite | commands/s, 1 client |" in markdown
    assert results["machine"]["nproc"] >= 1
