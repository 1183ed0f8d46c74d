"""Benchmarks of cqrskit against the `eventsourcing` library on the Orders workload.

Run ``make bench`` (quick sizes) or ``make bench FULL=1``; ``python -m benchmarks --help``
lists the options. Results go to ``benchmarks/RESULTS.md`` and ``benchmarks/results.json``.
"""
