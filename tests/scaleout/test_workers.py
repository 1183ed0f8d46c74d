"""Partitioned projection workers as separate processes (``orders project --nats``) under a
command load: they share the partitions, rebalance when a worker joins, leaves or is killed
with -9, and the read model in PostgreSQL ends up exactly a full replay of the event store:
every acknowledged command applied once, the dashboard and daily figures exact."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cqrskit.nats import DEFAULT_PARTITIONS
from tests.scaleout.cluster import Cluster, Load, OrdersProcess, check_every_node, wait_until
from tests.support.jetstream import fresh_stream_name, nats_url
from tests.support.postgres import fresh_url

pytestmark = pytest.mark.postgres

_OWNS = re.compile(r"owns partitions \[([0-9, ]*)\]")


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    running = Cluster(tmp_path, fresh_url(request), nats_url(), fresh_stream_name(request))
    yield running
    running.shut_down()


def owned(worker: OrdersProcess) -> set[int]:
    """The partitions ``worker`` last said it owns (from its log)."""
    found: set[int] = set()
    for line in worker.output().splitlines():
        try:
            message = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if match := _OWNS.search(message):
            found = {int(p) for p in match.group(1).split(",") if p.strip()}
    return found


def shared_by(workers: list[OrdersProcess]) -> bool:
    """Every partition is owned by exactly one of ``workers``, in even shares."""
    shares = [owned(worker) for worker in workers]
    every = sorted(p for share in shares for p in share)
    even = max(map(len, shares)) - min(map(len, shares)) <= 1
    return every == list(range(DEFAULT_PARTITIONS)) and even


def test_workers_share_the_partitions_and_rebalance_as_they_join_leave_and_die(
    cluster: Cluster,
) -> None:
    cluster.relay()
    service = cluster.service("svc")
    first, second = cluster.workers(2)
    wait_until(lambda: shared_by([first, second]), 60, "two workers to share the partitions")
    load = Load([service], orders=150, prefix=f"ORD-{uuid.uuid4().hex[:8]}").start()
    load.wait_for(60)

    (joined,) = cluster.workers(1)  # joins under load
    wait_until(lambda: shared_by([first, second, joined]), 60, "a share for the new worker")
    load.wait_for(150)
    assert first.stop() == 0  # leaves (SIGTERM): hands its partitions on
    wait_until(lambda: shared_by([second, joined]), 60, "the leaver's share handed on")
    load.wait_for(250)
    second.kill9()  # dies mid-batch: its claims go with its connection

    wait_until(lambda: shared_by([joined]), 60, "the survivor to take every partition")
    load.join()
    check_every_node(cluster, [service], load)
