"""Screenshots of the dashboard at desktop and phone widths, over a week of demo orders.

``python -m tests.browser.screenshots docs/`` (``make screenshots``) writes the pictures the
README shows; the browser tests take the same ones into a temporary folder and check them.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orders.app import Settings, build_app
from orders.domain import AddItems, CreateOrder, LineItem, SubmitOrder
from tests.e2e.server import ServerThread

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
CATALOGUE = [
    ("Laptop", "999.00"),
    ("Mouse", "49.00"),
    ("Keyboard", "79.00"),
    ("Monitor", "399.00"),
    ("Headset", "129.00"),
    ("Dock", "219.00"),
]


async def write_history(db_url: str, days: int = 7) -> None:
    """A few orders a day over the last ``days`` days (the clock set back for each)."""
    today = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    moment = today - timedelta(days=days - 1)
    orders_app = await build_app(Settings(db_url=db_url), clock=lambda: moment)
    try:
        for day in range(days):
            for n in range(2 + (day * 3) % 5):
                moment = today - timedelta(days=days - 1 - day, minutes=-7 * n)
                order_id = f"ORD-D{day}-{n:02d}"
                first = CATALOGUE[(day + n) % len(CATALOGUE)]
                second = CATALOGUE[(day * 2 + n + 1) % len(CATALOGUE)]
                items = (LineItem(name=first[0], price=Decimal(first[1]), quantity=1 + n % 2),)
                await orders_app.send(
                    CreateOrder(order_id=order_id, customer_id=f"CUST-{100 + n % 4}", items=items)
                )
                item = LineItem(name=second[0], price=Decimal(second[1]), quantity=1)
                await orders_app.send(AddItems(order_id=order_id, items=(item,)))
                if day < days - 1 or n % 2 == 0:
                    await orders_app.send(SubmitOrder(order_id=order_id))
    finally:
        await orders_app.close()


def dashboard_ready(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#orders-table tbody tr[data-order]").first).to_be_visible()
    expect(page.locator("#event-log tbody tr").first).to_be_visible()
    expect(page.locator("#projections-table tbody tr")).to_have_count(2)


def take(browser: Browser, url: str, folder: Path) -> list[Path]:
    """Desktop and phone screenshots of the dashboard at ``url``, after one command sent from
    its form (so the command panel shows a trace)."""
    shots = []
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            page.goto(url)
            dashboard_ready(page)
            page.get_by_role("button", name="Send CreateOrder").click()
            expect(page.locator('[data-trace="query"]')).to_contain_text("with the token")
            expect(page.locator('[data-trace="projections"]')).to_contain_text("order_stats")
            path = folder / f"dashboard-{name}.png"
            page.screenshot(path=str(path), full_page=True, animations="disabled")
            shots.append(path)
        finally:
            context.close()
    return shots


def not_blank(path: Path) -> bool:
    """More than a background: many colours, none covering nearly everything."""
    with Image.open(path) as image:
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20) or []
    total = pixels.width * pixels.height
    commonest = max(count for count, _ in colours)
    return len(colours) > 50 and commonest < 0.9 * total


def main(folder: Path) -> None:
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

    with tempfile.TemporaryDirectory() as work:
        db_url = f"sqlite:///{Path(work) / 'orders.db'}"
        asyncio.run(write_history(db_url))
        running = ServerThread(Settings(db_url=db_url)).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for path in take(browser, running.url, folder):
                    assert not_blank(path), path
                    print(f"wrote {path}")
                browser.close()
        finally:
            running.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
