"""Fixtures for the JetStream tests: a stream of the test's own on the shared test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cqrskit.nats import JetStreamLog
from orders.app import OrdersApp, Settings, build_app
from tests.support.jetstream import fresh_stream_name, nats_url

DURABLE = ["sqlite", "postgres"]


def db_url_for(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A URL to an empty database of backend ``name``."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('orders') / 'orders.db'}"
    from tests.support.postgres import fresh_url

    return fresh_url(request)


@pytest.fixture(params=DURABLE)
async def orders_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OrdersApp]:
    """The Orders application on an empty database of each durable backend (projections not
    running)."""
    app = await build_app(Settings(db_url=db_url_for(request.param, tmp_path_factory, request)))
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    """A new stream name (the stream is deleted after the test)."""
    return fresh_stream_name(request)


@pytest.fixture
async def jetstream(stream_name: str) -> AsyncIterator[JetStreamLog]:
    """A fresh JetStream event log with 4 partitions."""
    opened = await JetStreamLog.open(nats_url(), stream=stream_name, partitions=4)
    try:
        yield opened
    finally:
        await opened.close()
