"""RESULTS.md keeps the sections measured apart from the main run (live streams, scale-out)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from benchmarks.report import HERE, MEASURED_APART
from benchmarks.sections import write_section


def test_a_section_replaces_its_earlier_self_and_is_appended_the_first_time(
    tmp_path: Path,
) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nbody\n")

    write_section("<!-- s -->\nfirst\n<!-- /s -->", "<!-- s -->", "<!-- /s -->", results)
    write_section("<!-- s -->\nsecond\n<!-- /s -->", "<!-- s -->", "<!-- /s -->", results)

    assert results.read_text() == "# Results\n\nbody\n\n<!-- s -->\nsecond\n<!-- /s -->\n"


def test_the_committed_results_hold_every_section_measured_apart() -> None:
    # A full run rewrites RESULTS.md: the sections measured apart must come back from their
    # results files (the scale-out section was once dropped that way).
    document = (HERE / "RESULTS.md").read_text()
    for results_file, module in MEASURED_APART:
        measured = json.loads((HERE / results_file).read_text())
        assert importlib.import_module(module).section(measured) in document, results_file
