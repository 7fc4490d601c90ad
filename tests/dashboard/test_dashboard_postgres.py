"""The main flows on PostgreSQL + Redis (the other browser tests run on SQLite)."""

from __future__ import annotations

import pytest
from browser import Site
from fixtures import browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import open_keys, sign_in
from playwright.sync_api import Page, expect


@pytest.fixture(name="backend")
def postgres_backend() -> str:
    return "postgres"


def test_sign_in_create_and_revoke_a_key_and_watch_the_overview(page: Page, site: Site) -> None:
    sign_in(page, site)
    events = page.get_by_role("article", name="Events, last hour").locator(".card-value")
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    with site.api() as client:
        assert client.post("/api/v1/event-types", json={"name": "pg.checked"}).status_code == 201
        assert client.post("/api/v1/events", json={"type": "pg.checked", "data": {}}).is_success
    expect(events).to_have_text("1")

    open_keys(page)
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create an API key")
    dialog.get_by_label("Name").fill("pg-key")
    dialog.get_by_role("group", name="events", exact=True).get_by_label("read").check()
    dialog.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("dialog", name="Key created")
    secret = shown.get_by_label("The key pg-key").input_value()
    shown.get_by_role("button", name="Done").click()
    with site.api(secret) as client:
        assert client.get("/api/v1/events").status_code == 200
    page.get_by_role("button", name="Revoke pg-key").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("rowheader", name="pg-key").locator("xpath=..")).to_contain_text(
        "revoked"
    )
    with site.api(secret) as client:
        assert client.get("/api/v1/events").status_code == 401
