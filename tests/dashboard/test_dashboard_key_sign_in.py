"""Signing in to the dashboard with an API key (the owner key from the data folder), in
Chromium against a served Forecourt."""

from __future__ import annotations

import re

from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from playwright.sync_api import Page, expect

from forecourt.bootstrap import OWNER_KEY_NAME


def open_key_sign_in(page: Page) -> None:
    page.goto("/sign-in")
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_focused()
    page.get_by_text("Sign in with an API key").click()
    expect(page.get_by_label("API key")).to_be_visible()


def test_a_wrong_key_is_refused_next_to_the_field(page: Page, site: Site) -> None:
    open_key_sign_in(page)
    field = page.get_by_label("API key")
    assert field.get_attribute("type") == "password"
    assert_accessible(page, "the sign-in page with the key form open")

    field.fill("fck_live_not-a-key")
    page.get_by_role("button", name="Sign in with the key").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This key cannot sign in")
    expect(field).to_have_attribute("aria-invalid", "true")
    # The key is not kept in the page after it was sent.
    expect(field).to_have_value("")
    assert_accessible(page, "the sign-in page with a refused key")
    assert "fc_session" not in {c["name"] for c in page.context.cookies()}


def test_the_owner_key_from_the_data_folder_signs_in(page: Page, site: Site) -> None:
    # ``site.owner_key`` is what the first start wrote to DATA_DIR/owner-key (tests/served.py).
    open_key_sign_in(page)
    page.get_by_label("API key").fill(site.owner_key)
    page.get_by_role("button", name="Sign in with the key").click()
    expect(page).to_have_url(re.compile(r"/overview$"))
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_focused()
    # The header names the key, never its secret.
    account = page.locator(".account")
    expect(account).to_contain_text(OWNER_KEY_NAME)
    expect(account).to_contain_text("API key")
    assert site.owner_key not in page.content()
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["fc_session"]["httpOnly"]
    assert site.owner_key not in {c["value"] for c in cookies.values()}
    assert_accessible(page, "the overview signed in with the owner key")

    # The session reads: the API keys page lists the owner key.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_focused()
    expect(page.get_by_role("rowheader", name=OWNER_KEY_NAME, exact=True)).to_be_visible()

    # A reload keeps the session, and the header still names the key.
    page.reload()
    expect(page.locator(".account")).to_contain_text(OWNER_KEY_NAME)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    assert "fc_session" not in {c["name"] for c in page.context.cookies()}
