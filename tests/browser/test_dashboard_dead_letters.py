"""The dashboard's projection panel shows dead letters and a halted projection."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import Watched
from tests.browser.test_dashboard import create, new_id
from tests.e2e.server import ServerThread
from tests.e2e.test_cli_dead_letters import append_newer_event

OpenPage = Callable[..., Watched]


def test_the_projection_panel_counts_parked_events_and_shows_a_halted_projection(
    open_page: OpenPage, service: ServerThread, tmp_path: Path
) -> None:
    # given an order, then an event on it that this release cannot read
    order_id = new_id("ORD")
    create(service, order_id)
    db = f"sqlite:///{tmp_path / 'orders.db'}"
    with ThreadPoolExecutor(1) as other_thread:  # Playwright holds this thread's event loop
        other_thread.submit(append_newer_event, db, order_id).result()

    # when the dashboard is open
    watched = open_page("/")
    page = watched.page

    # then "orders" (policy park) counts the parked event and goes on; "order_stats" (policy
    # stop) is shown halted
    orders = page.locator('#projections-table tr[data-projection="orders"]')
    stats = page.locator('#projections-table tr[data-projection="order_stats"]')
    expect(orders.locator(".dead-letters")).to_have_text("1")
    expect(orders.locator("td").nth(1)).to_have_text("running")
    expect(stats.locator("td").nth(1)).to_have_text("halted")
    expect(page.locator("#projections-table th", has_text="Dead letters")).to_be_visible()
    assert watched.console_errors == []
