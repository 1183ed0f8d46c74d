"""Sections of ``RESULTS.md`` measured apart from the main run (live streams, scale-out).

Each is written between its own markers by its benchmark, and written again from its JSON
results whenever ``benchmarks/report.py`` rewrites the file, so a full run never drops them.
"""

from __future__ import annotations

from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, start: str, end: str, results_md: Path = RESULTS_MD) -> None:
    """Put ``text`` (which begins with ``start`` and ends with ``end``) in place of the
    section between those markers, or at the end of ``results_md`` if it has none."""
    document = results_md.read_text() if results_md.exists() else ""
    if start in document:
        before = document.split(start, 1)[0]
        after = document.split(end, 1)[1]
        document = before + text + after
    else:
        document = document.rstrip("\n") + "\n\n" + text + "\n"
    results_md.write_text(document)
