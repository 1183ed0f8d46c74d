"""The dashboard in a real browser: it loads clean, stays live, and teaches the CQRS flow."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PHONE, Watched
from tests.browser.screenshots import dashboard_ready, not_blank, take
from tests.e2e.server import ServerThread

OpenPage = Callable[..., Watched]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(service: ServerThread, order_id: str, customer: str = "CUST-1") -> httpx.Response:
    with service.client() as client:
        item = {"name": "Monitor", "price": "399.00", "quantity": 2}
        created = client.post(
            "/orders", json={"order_id": order_id, "customer_id": customer, "items": [item]}
        )
    assert created.status_code == 201, created.text
    return created


def test_the_dashboard_loads_live_without_console_errors_or_foreign_requests(
    open_page: OpenPage, service: ServerThread
) -> None:
    create(service, new_id("ORD"))
    for viewport in ({"width": 1400, "height": 1000}, PHONE):
        watched = open_page("/", viewport)
        dashboard_ready(watched.page)
        expect(watched.page.locator("#kpi-total_orders")).to_have_text("1")
        expect(watched.page.locator("#kpi-total_revenue")).to_have_text("798.00")
        assert watched.console_errors == []
        assert watched.foreign_requests == []


def test_the_api_docs_work_offline(open_page: OpenPage) -> None:
    watched = open_page("/docs")
    expect(watched.page.locator(".swagger-ui .info .title")).to_contain_text("Orders")
    expect(watched.page.locator(".opblock-summary-path").first).to_be_visible()
    assert watched.console_errors == []
    assert watched.foreign_requests == []


def test_a_command_sent_from_the_form_updates_kpis_orders_log_and_its_trace(
    open_page: OpenPage,
) -> None:
    watched = open_page("/")
    page = watched.page
    dashboard_ready_empty(page)
    order_id = new_id("ORD")
    page.get_by_label("Order id", exact=True).fill(order_id)
    page.get_by_label("Customer", exact=True).fill("CUST-form")
    page.get_by_label("Name").fill("Desk")
    page.get_by_label("Price").fill("250.50")
    page.get_by_label("Qty").fill("2")
    page.get_by_role("button", name="Send CreateOrder").click()

    expect(page.locator("#kpi-total_orders")).to_have_text("1")
    expect(page.locator("#kpi-total_revenue")).to_have_text("501.00")
    expect(page.locator("#kpi-draft_orders")).to_have_text("1")
    row = page.locator(f'#orders-table tr[data-order="{order_id}"]')
    expect(row).to_contain_text("CUST-form")
    expect(row).to_contain_text("501.00")
    expect(page.locator("#event-log tbody tr").first).to_contain_text("OrderCreated")
    expect(page.locator("#event-log tbody tr").first).to_contain_text(order_id)

    # The trace: the command, its event, its token, each projection, then the query.
    expect(page.locator('[data-trace="command"]')).to_contain_text("POST /orders → 201")
    expect(page.locator('[data-trace="events"]')).to_contain_text("OrderCreated v1 at position 1")
    expect(page.locator('[data-trace="token"]')).to_contain_text("Consistency-Token: 1")
    for projection in ("orders", "order_stats"):
        expect(page.locator('[data-trace="projections"]')).to_contain_text(f"{projection}: applied")
    expect(page.locator('[data-trace="query"]')).to_contain_text("draft, 1 items, total 501.00")
    status = page.locator('#projections-table tr[data-projection="order_stats"]')
    expect(status).to_contain_text("running")

    page.get_by_role("tab", name="SubmitOrder").click()
    expect(page.get_by_label("Order id", exact=True)).to_have_value(order_id)
    page.get_by_role("button", name="Send SubmitOrder").click()
    expect(page.locator("#kpi-submitted_orders")).to_have_text("1")
    expect(row).to_contain_text("submitted")

    # A rule violation is the problem document's message, not a broken page.
    page.get_by_role("button", name="Send SubmitOrder").click()
    expect(page.get_by_role("alert")).to_contain_text(f"order '{order_id}' is already submitted")
    assert watched.script_errors == []
    # The browser notes the refused request (409) in the console; nothing else went wrong.
    assert [e for e in watched.console_errors if "409 (Conflict)" not in e] == []


def dashboard_ready_empty(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#kpi-total_orders")).to_have_text("0")


def test_a_command_from_another_client_shows_on_an_open_page_within_a_second(
    open_page: OpenPage, service: ServerThread
) -> None:
    watched = open_page("/")
    page = watched.page
    dashboard_ready_empty(page)
    order_id = new_id("ORD")
    create(service, order_id, customer="CUST-other")
    sent = time.monotonic()
    # The promise: within a second of the command's answer (a deadline, not a sleep).
    expect(page.locator(f'#event-log tr:has-text("{order_id}")')).to_be_visible(timeout=1000)
    expect(page.locator(f'#orders-table tr[data-order="{order_id}"]')).to_be_visible(
        timeout=max(1, 1000 - int((time.monotonic() - sent) * 1000))
    )
    expect(page.locator("#kpi-total_orders")).to_have_text(
        "1", timeout=max(1, 1000 - int((time.monotonic() - sent) * 1000))
    )


def test_the_orders_list_filters_pages_and_finds_by_id(
    open_page: OpenPage, service: ServerThread
) -> None:
    ids = [f"ORD-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(12)]
    with service.client() as client:
        for n, order_id in enumerate(ids):
            create(service, order_id, customer="CUST-A" if n % 3 else "CUST-B")
            if n % 2:
                client.post(f"/orders/{order_id}/submit")
    page = open_page("/").page
    rows = page.locator("#orders-table tbody tr[data-order]")
    expect(rows).to_have_count(10)  # a page
    page.get_by_role("button", name="Next →").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#page-label")).to_have_text("page 2")
    page.get_by_role("button", name="← Previous").click()
    expect(rows).to_have_count(10)

    page.get_by_role("radiogroup", name="status").get_by_text("Submitted").click()
    expect(rows).to_have_count(6)
    page.get_by_label("filter by customer").fill("CUST-B")
    expect(rows).to_have_count(2)  # orders 3 and 9, newest first
    expect(rows.first).to_have_attribute("data-order", ids[9])

    page.get_by_label("find order by id").fill(ids[4])
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-order", ids[4])
    page.get_by_label("find order by id").fill("ORD-none")
    expect(page.locator("#orders-table tbody")).to_contain_text("no order with id ORD-none")


def test_an_order_page_shows_items_totals_times_and_its_live_event_stream(
    open_page: OpenPage, service: ServerThread
) -> None:
    order_id = new_id("ORD")
    create(service, order_id)
    watched = open_page(f"/ui/orders/{order_id}")
    page = watched.page
    expect(page.locator("#order-status")).to_have_text("draft")
    expect(page.locator("#order-total")).to_have_text("798.00")
    expect(page.locator("#items-table tbody tr")).to_have_count(1)
    expect(page.locator("#stream li")).to_have_count(1)
    with service.client() as client:
        client.post(
            f"/orders/{order_id}/items", json={"name": "Cable", "price": "9.99", "quantity": 3}
        )
        client.post(f"/orders/{order_id}/submit")
    expect(page.locator("#order-status")).to_have_text("submitted")
    expect(page.locator("#order-total")).to_have_text("827.97")
    expect(page.locator("#items-table tbody tr")).to_have_count(2)
    expect(page.locator("#stream li")).to_have_count(3)
    expect(page.locator("#stream li").last).to_contain_text("v3 OrderSubmitted")
    expect(page.locator("#order-submitted")).not_to_have_text("\N{EN DASH}")
    assert watched.console_errors == []
    assert watched.foreign_requests == []


def test_desktop_and_phone_screenshots_are_not_blank(
    browser: Browser, service: ServerThread, tmp_path: Path
) -> None:
    create(service, new_id("ORD"))
    shots = take(browser, service.url, tmp_path)
    assert [p.name for p in shots] == ["dashboard-desktop.png", "dashboard-phone.png"]
    for path in shots:
        assert not_blank(path), path
