"""A scale-out deployment as separate processes, under load and faults: relays, query nodes with
their own read models, one PostgreSQL database, one NATS server.

Every test ends with the same check: every acknowledged command is in every node's read model
exactly once, and every read model equals a full replay of the event store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scaleout.cluster import Cluster, Load, check_every_node, wait_until
from tests.support.jetstream import fresh_stream_name, nats_url, throwaway_server
from tests.support.postgres import fresh_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    running = Cluster(tmp_path, fresh_url(request), nats_url(), fresh_stream_name(request))
    yield running
    running.shut_down()


def _prefix() -> str:
    return f"ORD-{uuid.uuid4().hex[:8]}"


def test_every_node_keeps_its_own_read_model_and_a_new_node_builds_one(
    cluster: Cluster,
) -> None:
    cluster.relay()
    nodes = [cluster.node("a"), cluster.node("b")]
    load = Load(nodes, orders=40, prefix=_prefix()).start()
    load.join()

    late = cluster.node("late")  # joins after the fact: builds its read model from scratch

    check_every_node(cluster, [*nodes, late], load)


def test_the_standby_relay_takes_over_when_the_active_one_is_killed(cluster: Cluster) -> None:
    relays = [cluster.relay(), cluster.relay()]
    wait_until(lambda: any("active" in r.output() for r in relays), 60, "an active relay")
    active = next(r for r in relays if ": active" in r.output())
    standby = next(r for r in relays if r is not active)
    nodes = [cluster.node("a"), cluster.node("b")]
    load = Load(nodes, orders=60, prefix=_prefix()).start()
    load.wait_for(40)

    active.kill9()

    wait_until(lambda: ": active" in standby.output(), 30, "the standby to take over")
    load.join()
    check_every_node(cluster, nodes, load)


def test_a_node_killed_mid_load_catches_up_from_its_own_checkpoint(cluster: Cluster) -> None:
    cluster.relay()
    nodes = [cluster.node("a"), cluster.node("b")]
    load = Load(nodes, orders=60, prefix=_prefix()).start()
    load.wait_for(40)

    nodes[1].kill9()
    load.wait_for(80)
    nodes[1].start()
    nodes[1].wait_ready()

    load.join()
    check_every_node(cluster, nodes, load)


def test_a_restarted_nats_server_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = throwaway_server(request)  # never the shared server: this one is ours to restart
    cluster = Cluster(tmp_path, fresh_url(request), server.url, "restarts")
    request.addfinalizer(cluster.shut_down)
    cluster.relay()
    nodes = [cluster.node("a"), cluster.node("b")]
    load = Load(nodes, orders=60, prefix=_prefix()).start()
    load.wait_for(40)

    server.restart()

    load.join()
    check_every_node(cluster, nodes, load)
