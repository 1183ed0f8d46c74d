"""Partitioned projection workers as separate processes (``orders project --nats``) under a
command load: they share the partitions, rebalance when a worker joins, leaves or is killed
with -9, and the read model in PostgreSQL ends up exactly a full replay of the event store:
every acknowledged command applied once, the dashboard and daily figures exact; so it does
when ``orders projections rebuild --nats`` rebuilds it while they run."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cqrskit.nats import DEFAULT_PARTITIONS
from orders.app import Settings, build_app
from tests.scaleout.cluster import (
    Cluster,
    Load,
    Node,
    OrdersProcess,
    check_every_node,
    read_model_of,
    wait_until,
)
from tests.support.jetstream import fresh_stream_name, nats_url
from tests.support.orders import fill_orders
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


def two_workers_behind_a_service(cluster: Cluster) -> tuple[Node, OrdersProcess, OrdersProcess]:
    """A relay, a service over the shared read model, and two workers sharing the partitions."""
    cluster.relay()
    service = cluster.service("svc")
    first, second = cluster.workers(2)
    wait_until(lambda: shared_by([first, second]), 60, "two workers to share the partitions")
    return service, first, second


def test_workers_share_the_partitions_and_rebalance_as_they_join_leave_and_die(
    cluster: Cluster,
) -> None:
    service, first, second = two_workers_behind_a_service(cluster)
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


def loads_until(finished: Callable[[], bool], service: Node, prefix: str) -> list[Load]:
    """Small loads one after the other until ``finished()`` (at least one)."""
    loads: list[Load] = []
    while not loads or not finished():
        loads.append(Load([service], orders=10, prefix=f"{prefix}-{len(loads)}").start())
        loads[-1].join()
    return loads


def together(service: Node, loads: list[Load]) -> Load:
    """The loads as one (for :func:`check_every_node`)."""
    return Load(
        [service],
        orders=sum(load.orders for load in loads),
        prefix="",
        acknowledged=[ack for load in loads for ack in load.acknowledged],
        errors=[error for load in loads for error in load.errors],
    )


def test_a_rebuild_while_the_workers_run_under_load_ends_in_a_full_replay(
    cluster: Cluster,
) -> None:
    service, first, second = two_workers_behind_a_service(cluster)
    prefix = f"ORD-{uuid.uuid4().hex[:8]}"
    before = Load([service], orders=40, prefix=prefix).start()
    before.wait_for(30)

    rebuild = cluster.command("projections", "rebuild")
    during = loads_until(lambda: rebuild.poll() is not None, service, f"{prefix}-during")
    output, _ = rebuild.communicate(timeout=120)

    assert rebuild.returncode == 0, output
    assert f"by the workers of group {cluster.stream!r}" in output, output
    rebuilt_up_to = int(re.findall(r"up to position (\d+)", output)[0])
    assert rebuilt_up_to < cluster.head_position()  # commands were acknowledged meanwhile
    before.join()
    assert first.alive
    assert second.alive
    check_every_node(cluster, [service], together(service, [before, *during]))


def test_an_idle_read_model_is_rebuilt_with_or_without_workers_and_never_as_one_projection(
    cluster: Cluster,
) -> None:
    cluster.relay()
    asyncio.run(_fill(cluster.db_url, 20))

    alone, _ = cluster.command("projections", "rebuild").communicate(timeout=120)
    assert "by this process (no worker of the group was running)" in alone, alone
    assert read_model_of(cluster.db_url) == cluster.expected_read_model()
    (worker,) = cluster.workers(1)
    wait_until(lambda: shared_by([worker]), 60, "the worker to own every partition")
    idle, _ = cluster.command("projections", "rebuild").communicate(timeout=120)
    assert "by the workers of group" in idle, idle  # no new event needed to notice the reset
    unpartitioned = cluster.command("projections", "rebuild", partitioned=False)
    refusal, _ = unpartitioned.communicate(timeout=120)

    assert unpartitioned.returncode == 2, refusal
    assert "kept by partitioned workers" in refusal
    # a query run as one process (no --nats) reads it, never runs its projections on it again
    query = cluster.command("stats", partitioned=False)
    refused_query, _ = query.communicate(timeout=120)
    assert query.returncode == 3, refused_query
    assert "kept by partitioned workers" in refused_query
    assert "CQRSKIT_PARTITIONED=1" in refused_query
    assert read_model_of(cluster.db_url) == cluster.expected_read_model()
    as_theirs = cluster.command("stats", "--json", partitioned=False, env=cluster.partitioned_env())
    served, _ = as_theirs.communicate(timeout=120)
    assert as_theirs.returncode == 0, served
    (document,) = [line for line in served.splitlines() if line.startswith("{")]
    assert json.loads(document)["dashboard"]["total_orders"] == 20, served


async def _fill(db_url: str, orders: int) -> None:
    app = await build_app(Settings(db_url=db_url))
    try:
        await fill_orders(app, orders, f"ORD-{uuid.uuid4().hex[:8]}")
    finally:
        await app.close()
