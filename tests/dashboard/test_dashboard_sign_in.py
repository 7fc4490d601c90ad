"""Sign-in, sign-out and the app shell, in Chromium against a served Forecourt."""

from __future__ import annotations

import re

import httpx
from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import sign_in
from playwright.sync_api import Page, expect


def test_sign_in_with_a_password_then_sign_out(page: Page, site: Site) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_focused()
    expect(page.get_by_text("session ended")).to_have_count(0)
    # A new installation has no user yet: the page says how to make one with the owner key.
    page.get_by_text("No account yet?").click()
    hint = page.locator(".first-start pre")
    expect(hint).to_contain_text(f"curl -X POST {site.url}/api/v1/users \\")
    expect(hint).to_contain_text("Authorization: Bearer $(cat data/owner-key)")
    assert_accessible(page, "the sign-in page")

    page.get_by_label("Email").fill(site.email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Wrong email or password")
    assert_accessible(page, "the sign-in page with an error")

    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/overview$"))
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_focused()
    expect(page.get_by_text(site.email)).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")

    # The session is a cookie the page's scripts cannot read; its CSRF token is readable.
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["fc_session"]["httpOnly"]
    assert not cookies["fc_csrf"]["httpOnly"]
    assert "fc_session" not in page.evaluate("document.cookie")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    assert "fc_session" not in {c["name"] for c in page.context.cookies()}
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("session ended")).to_have_count(0)


def test_keyboard_alone_signs_in_and_moves_through_the_shell(page: Page, site: Site) -> None:
    page.goto("/sign-in")
    expect(page.get_by_role("heading", name="Sign in")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(site.email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(site.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_focused()

    # Backwards from the page's heading: sign-out, each link of the navigation, then the skip
    # link, each with a visible focus ring.
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Sign out")).to_be_focused()
    nav = page.get_by_role("navigation", name="Main").get_by_role("link")
    links = nav.all_inner_texts()
    assert links[:2] == ["Overview", "API keys"], links
    for name in reversed(links):
        page.keyboard.press("Shift+Tab")
        expect(nav.filter(has_text=name)).to_be_focused()
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    keys_link = nav.filter(has_text="API keys")
    page.keyboard.press("Shift+Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Sign out")).to_be_focused()
    for _ in range(len(links) - 1):
        page.keyboard.press("Shift+Tab")
    expect(keys_link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/settings/api-keys$"))
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_focused()
    page.go_back()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_a_deep_link_comes_back_after_sign_in(page: Page, site: Site) -> None:
    sign_in(page, site, start="/settings/api-keys")
    expect(page).to_have_url(re.compile(r"/settings/api-keys$"))
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()


def test_an_unknown_path_shows_not_found_in_the_shell(page: Page, site: Site) -> None:
    sign_in(page, site)
    page.goto("/no/such/page")
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    assert_accessible(page, "the not-found page")


def test_a_session_ended_elsewhere_signs_out_with_a_reason(page: Page, site: Site) -> None:
    sign_in(page, site)
    with site.api() as api:
        [user] = [u for u in api.get("/api/v1/users").json() if u["email"] == site.email]
        ended = api.delete(f"/api/v1/users/{user['id']}/sessions")
        assert ended.status_code == 200, ended.text
    # The next request the page makes is refused: it says why it signed out.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("signed out because your session ended")
    # After a reload too (the session's cookies are still there, the session is not).
    page.reload()
    expect(page.get_by_role("status")).to_contain_text("signed out because your session ended")
    # Signing in again goes back to the page that was asked for.
    page.get_by_label("Email").fill(site.email)
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()


def test_repeated_failures_lock_the_account_with_a_clear_message(page: Page, site: Site) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(site.email)
    alert = page.get_by_role("alert")
    for _ in range(5):
        page.get_by_label("Password").fill("wrong password")
        page.get_by_role("button", name="Sign in").click()
        expect(alert).to_be_visible()
        expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
        if "locked" in alert.inner_text():
            break
    expect(alert).to_contain_text("Too many attempts")
    expect(alert).to_contain_text(re.compile(r"sign-in is locked for \d+ s"))
    assert_accessible(page, "the sign-in page, locked")
    # The right password is refused too while the lock lasts.
    page.get_by_label("Password").fill(site.password)
    page.get_by_role("button", name="Sign in").click()
    expect(alert).to_contain_text("Too many attempts")
    with httpx.Client(base_url=site.url) as client:
        assert (
            client.post(
                "/api/v1/auth/login", json={"email": site.email, "password": site.password}
            ).status_code
            == 429
        )
