"""``python -m benchmarks [--full] [--backends sqlite,postgres,memory] [--out DIR]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from benchmarks import report
from benchmarks.config import BACKENDS, PRESETS
from benchmarks.databases import databases, postgres_available
from benchmarks.suite import Suite


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes (long)")
    parser.add_argument("--size", choices=sorted(PRESETS), help="a size preset by name")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: memory,sqlite,postgres"
    )
    parser.add_argument("--out", type=Path, default=report.HERE, help="where results go")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP figures")
    parser.add_argument("--keep", action="store_true", help="keep the databases made")
    parser.add_argument(
        "--only",
        choices=Suite.SINGLE,
        action="append",
        help="measure only this section (repeatable); write the results to --out",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite RESULTS.md from results.json (after editing NOTES.md)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        report.rewrite(args.out, Console(width=150))
        return 0
    sizes = PRESETS[args.size or ("full" if args.full else "quick")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backends: {sorted(unknown)}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    if "postgres" in backends and not postgres_available():
        console.print("[yellow]PostgreSQL is not reachable (CQRSKIT_PG_DSN): skipping it")
        backends.remove("postgres")
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    begin = time.perf_counter()
    with databases(keep=args.keep) as dbs:
        suite = Suite(sizes, backends, dbs, console)
        if not args.no_http:
            from benchmarks.http_bench import http_figures

            suite.http = http_figures
        measurements = suite.run_only(args.only) if args.only else suite.run()
    rows = report.rows(measurements, sizes)
    report.print_table(console, rows)
    context = {
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - begin,
        "sizes": asdict(sizes),
        "machine": report.machine(),
        "durable_commits_per_second": suite.baseline,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "versions": report.versions(tuple(backends)),
    }
    report.write(args.out, rows, measurements, context)
    console.print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}")
    failed = [m for m in measurements if not m.verified]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
