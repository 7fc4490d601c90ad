"""Steps the browser tests share."""

from __future__ import annotations

from browser import Site
from playwright.sync_api import Page, expect


def sign_in(page: Page, site: Site, start: str = "/") -> None:
    page.goto(start)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email").fill(site.email)
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def open_keys(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_focused()
    expect(page.get_by_role("table")).to_be_visible()
