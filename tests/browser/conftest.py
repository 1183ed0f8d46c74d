"""Browser fixtures: Debian's Chromium driven by Playwright, and a service on a fresh SQLite
database (Playwright's own browser download is not reachable here: `.ci/run` installs the
`chromium` package when it is missing)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orders.app import Settings
from tests.e2e.server import ServerThread

CHROMIUM = os.environ.get("CQRSKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Deadlines for the page to reach a state (not sleeps): generous, for a loaded 2-core machine.
expect.set_options(timeout=15_000)
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}


# Module scope: while Playwright's sync API is open it leaves its event loop set on the thread,
# which asyncio.run and the async tests of later modules would trip over.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CQRSKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(Settings(db_url=f"sqlite:///{tmp_path / 'orders.db'}")).start()
    yield running
    running.stop()


class Watched:
    """A page, and what it did that a test may hold against it."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.console_errors: list[str] = []
        self.script_errors: list[str] = []
        self.foreign_requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", self._script_error)
        page.on("request", self._request)

    def _console(self, message: object) -> None:
        if getattr(message, "type", "") == "error":
            self.console_errors.append(str(getattr(message, "text", message)))

    def _script_error(self, error: object) -> None:
        self.script_errors.append(str(error))
        self.console_errors.append(str(error))

    def _request(self, request: object) -> None:
        url = str(getattr(request, "url", ""))
        if not url.startswith((self.origin + "/", "data:")):
            self.foreign_requests.append(url)


@pytest.fixture
def open_page(browser: Browser, service: ServerThread) -> Iterator[object]:
    contexts = []

    def open_(path: str = "/", viewport: dict[str, int] = DESKTOP) -> Watched:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page, service.url)
        page.goto(service.url + path)
        return watched

    yield open_
    for context in contexts:
        context.close()
