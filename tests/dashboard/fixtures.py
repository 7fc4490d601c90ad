"""Fixtures of the dashboard's browser tests (a module, not a conftest: tests/conftest.py is
imported by name, which a second conftest here would shadow)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser import CHROMIUM_ARGS, DESKTOP, PASSWORD, Site, create_user, require_chromium
from build import index_html
from playwright.sync_api import Browser, Page, sync_playwright

from forecourt.settings import Settings
from served import serve

EMAIL = "dana@example.com"


@pytest.fixture(name="backend", params=["sqlite"])
def backend_sqlite_fixture(request: pytest.FixtureRequest) -> str:
    """The browser tests' backend, ``backend`` of a module importing it, that runs on SQLite
    only (the flows are the same on PostgreSQL; test_dashboard_postgres.py runs one there)."""
    return str(request.param)


@pytest.fixture(name="browser", scope="module")
def browser_fixture() -> Iterator[Browser]:
    """Chromium for one test module, stopped with it: Playwright's synchronous API keeps an
    event loop of its own, which must be gone before other modules' async tests run."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(name="site")
def site_fixture(settings_factory: Any) -> Iterator[Site]:
    """A Forecourt served on loopback (this test's backend), with a user who has a password."""
    index_html()  # fails, naming how to build it, when the dashboard is not built
    settings: Settings = settings_factory(signin_lockout_failures=2)
    with serve(settings) as served:
        create_user(served.url, served.owner_key, EMAIL)
        yield Site(served.url, served.owner_key, EMAIL, PASSWORD)


@pytest.fixture(name="page")
def page_fixture(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(
        base_url=site.url, viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    opened = context.new_page()
    # Uncaught errors and refusals by the Content-Security-Policy: none may happen on any page.
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"the page reported errors: {errors}"
