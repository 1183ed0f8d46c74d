"""The live-streams benchmark runs end to end on tiny sizes: every client gets every event."""

from __future__ import annotations

from benchmarks.sse_load import measure, section


def test_the_live_streams_benchmark_verifies_what_every_client_received() -> None:
    result = measure(clients=3, rate=50, seconds=1)

    assert result["verified"], result
    assert result["streams"]["events_per_client"] == [50]
    assert "## Live streams under load" in section([result])
