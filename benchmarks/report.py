"""The results: a rich table on the terminal, ``RESULTS.md`` and ``results.json``."""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import sqlite3
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.config import FIGURES, Sizes
from benchmarks.databases import pg_dsn
from benchmarks.measure import TIMES, Figure, Measurement, ratio

HERE = Path(__file__).parent
NOTES = HERE / "NOTES.md"
BACKEND_NAMES = {"memory": "memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}


@dataclass
class Row:
    """One figure on one backend: both sides, their ratio and the target's verdict."""

    figure: str
    label: str
    unit: str
    backend: str
    cqrskit: float | None
    eventsourcing: float | None
    ratio: float | None
    target: str
    met: bool | None
    note: str


def _goal_met(
    figure: Figure, backend: str, value: float | None, times: float | None, sizes: Sizes
) -> bool | None:
    goals = [goal for goal in figure.goals if goal[2] == backend]
    if not goals or value is None:
        return None
    if figure.key == "rebuild_peak_mb" and sizes.peak_events < 1_000_000:
        return None  # the target is set at 1M events
    verdicts = []
    for kind, number, _ in goals:
        if kind == "ratio":
            verdicts.append(times is not None and times >= number)
        elif kind == "max":
            verdicts.append(value <= number)
        else:
            verdicts.append(value >= number)
    return all(verdicts)


def rows(measurements: list[Measurement], sizes: Sizes) -> list[Row]:
    found = {(m.figure, m.backend, m.side): m for m in measurements}
    backends = list(dict.fromkeys(m.backend for m in measurements))
    out = []
    for backend in backends:
        for figure in FIGURES:
            cq = found.get((figure.key, backend, "cqrskit"))
            es = found.get((figure.key, backend, "eventsourcing"))
            if cq is None and es is None:
                continue
            cq_value = cq.value if cq is not None and cq.verified else None
            es_value = es.value if es is not None and es.verified else None
            times = ratio(cq_value, es_value, figure.higher_is_better)
            notes = [
                f"{side}: {m.note}"
                for side, m in (("cqrskit", cq), ("es", es))
                if m is not None and m.note
            ]
            out.append(
                Row(
                    figure.key,
                    figure.label,
                    figure.unit,
                    backend,
                    cq_value,
                    es_value,
                    times,
                    figure.target(backend),
                    _goal_met(figure, backend, cq_value, times, sizes),
                    "; ".join(notes),
                )
            )
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == TIMES and value < 10:
        return f"{value:,.2f}"
    if unit in ("µs", "ms", TIMES) and value < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}{TIMES}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def print_table(console: Console, table_rows: list[Row]) -> None:
    table = Table(title="cqrskit vs eventsourcing 9.5.6 — Orders workload")
    for column in ("backend", "figure", "unit", "cqrskit", "eventsourcing", "ratio", "target", ""):
        table.add_column(
            column, justify="right" if column in ("cqrskit", "eventsourcing", "ratio") else "left"
        )
    previous = None
    for row in table_rows:
        if previous is not None and row.backend != previous:
            table.add_section()
        previous = row.backend
        style = {True: "green", False: "red", None: ""}[row.met]
        table.add_row(
            BACKEND_NAMES[row.backend],
            row.label,
            row.unit,
            fmt(row.cqrskit, row.unit),
            fmt(row.eventsourcing, row.unit),
            fmt_ratio(row.ratio),
            row.target,
            f"[{style}]{verdict(row.met)}[/]" if style else "",
        )
    console.print(table)
    for row in table_rows:
        if row.note.startswith(("cqrskit: failed", "es: failed")) or "failed" in row.note:
            console.print(f"[red]{BACKEND_NAMES[row.backend]} {row.label}: {row.note}")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_revision() -> str:
    """The commit of the code measured, marked when the work tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted changes in src/" if dirty else head


def versions(backends: tuple[str, ...]) -> dict[str, str]:
    found = {"cqrskit commit": git_revision(), "sqlite": sqlite3.sqlite_version}
    for package in ("cqrskit", "eventsourcing", "msgspec", "psycopg", "fastapi", "uvicorn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    if "postgres" in backends:
        import psycopg

        try:
            with psycopg.connect(pg_dsn(), connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                found["postgresql"] = str(row[0]) if row else "?"
                found["postgresql synchronous_commit"] = str(sync[0]) if sync else "?"
        except psycopg.Error as error:
            found["postgresql"] = f"unreachable ({error})"
    return found


def write(
    out_dir: Path, table_rows: list[Row], measurements: list[Measurement], context: dict[str, Any]
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        **context,
        "rows": [asdict(row) for row in table_rows],
        "measurements": [m.to_json() for m in measurements],
    }
    (out_dir / "results.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (out_dir / "RESULTS.md").write_text(markdown(table_rows, context))


def _loads(values: list[float] | tuple[float, ...]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def rewrite(out_dir: Path, console: Console) -> None:
    """Write ``RESULTS.md`` again from ``results.json`` (for example after editing NOTES.md)."""
    document = json.loads((out_dir / "results.json").read_text())
    measurements = [Measurement(**m) for m in document.pop("measurements")]
    document.pop("rows")
    table_rows = rows(measurements, Sizes(**document["sizes"]))
    print_table(console, table_rows)
    write(out_dir, table_rows, measurements, document)


#: the sections measured apart from the main run (their results file, the module that renders
#: them), kept when this report rewrites RESULTS.md
MEASURED_APART = (
    ("sse_results.json", "benchmarks.sse_load"),
    ("scaleout_results.json", "benchmarks.scaleout"),
)


def markdown(table_rows: list[Row], context: dict[str, Any]) -> str:
    m, v, s = context["machine"], context["versions"], context["sizes"]
    lines = [
        "# Benchmarks: cqrskit vs eventsourcing",
        "",
        f"Run `{context['command']}` on {context['started']} ({s['name']} sizes), "
        f"{context['seconds']:.0f} s in all. Generated by `benchmarks/report.py`; the analysis "
        "at the end comes from `benchmarks/NOTES.md`.",
        "",
        f"**Machine**: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}.",
        "",
        "**Load average** (1, 5, 15 min) at the start "
        f"{_loads(context['load_average']['start'])}, at the end "
        f"{_loads(context['load_average']['end'])}: other work on this 2-core machine "
        "during the run skews the figures.",
        "",
        "**Raw durable commits/s** (one-row transactions straight through the driver, at the "
        "start and the end of the run; one command from one client cannot beat this): "
        + ", ".join(
            f"{BACKEND_NAMES[b]} {' → '.join(f'{v:,.0f}' for v in values)}"
            for b, values in context["durable_commits_per_second"].items()
        )
        + ".",
        "",
        "**Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "**Sizes**: " + ", ".join(f"{k}={val}" for k, val in s.items() if k != "name") + ".",
        "",
        "Ratio = how many times better cqrskit is (higher throughput, or lower latency / "
        "memory). Every figure counts only once its run was verified (the store and the read "
        "model hold the workload's orders, totals and counts); a failed run shows —.",
        "",
        "| backend | figure | unit | cqrskit | eventsourcing | ratio | target | |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in table_rows:
        lines.append(
            f"| {BACKEND_NAMES[row.backend]} | {row.label} | {row.unit} | "
            f"{fmt(row.cqrskit, row.unit)} | {fmt(row.eventsourcing, row.unit)} | "
            f"{fmt_ratio(row.ratio)} | {row.target} | {verdict(row.met)} |"
        )
    notes = [row for row in table_rows if row.note]
    if notes:
        lines += ["", "Notes on single figures:", ""]
        lines += [f"- {BACKEND_NAMES[r.backend]}, {r.label}: {r.note}" for r in notes]
    for results_file, module in MEASURED_APART:
        measured = HERE / results_file
        if measured.exists():
            section = importlib.import_module(module).section
            lines += ["", section(json.loads(measured.read_text()))]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(lines) + "\n"
