"""The audit log page (/audit-log): filters, pages, each entry's before and after, its states,
and the 403 of a session without the audit scope, in Chromium against a served Forecourt."""

from __future__ import annotations

import re

from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import sign_in
from playwright.sync_api import Page, Route, expect

XSS_NAME = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'


def create_keys(site: Site, count: int, prefix: str = "ci") -> list[str]:
    ids: list[str] = []
    with site.api() as client:
        for n in range(count):
            made = client.post(
                "/api/v1/keys", json={"name": f"{prefix}-{n}", "scopes": ["events:read"]}
            )
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
    return ids


def test_entries_filter_page_and_show_their_changes(page: Page, site: Site) -> None:
    create_keys(site, 26)
    with site.api() as client:
        made = client.post("/api/v1/keys", json={"name": XSS_NAME, "scopes": ["events:read"]})
        assert made.status_code == 201, made.text
        xss_id = made.json()["id"]
        assert client.post(f"/api/v1/keys/{xss_id}/revoke").status_code == 200

    sign_in(page, site)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_focused()
    table = page.get_by_role("region", name="Audit log table")
    expect(table.locator("tbody tr")).to_have_count(25)
    # Newest first: the sign-in, the revocation, then the key's creation.
    expect(table.locator("tbody tr").nth(0)).to_contain_text("user.signed_in")
    expect(table.locator("tbody tr").nth(1)).to_contain_text("key.revoked")
    assert_accessible(page, "the audit log")

    # The created key's before and after, its name shown as text and nothing run.
    created = table.locator("tbody tr").filter(has_text="key.created").first
    expect(created).to_contain_text(xss_id)
    created.get_by_text("Before and after").click()
    after = created.locator("pre").nth(1)
    expect(after).to_contain_text(XSS_NAME.replace('"', '\\"'))
    expect(created.locator("pre").nth(0)).to_have_text("(none)")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0
    assert_accessible(page, "the audit log with an entry open")

    # Cursor pages: the second page holds the rest, the oldest being the owner key's creation
    # at the first start.
    page.get_by_role("button", name="Next page").click()
    expect(table.locator("tbody tr").last).to_contain_text("key.created")
    expect(table.locator("tbody tr").last).to_contain_text("system")
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(table.locator("tbody tr").nth(1)).to_contain_text("key.revoked")

    # Filters: an action prefix and a target.
    page.get_by_label("Action").fill("key.revoked")
    page.get_by_role("button", name="Apply filters").click()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr")).to_contain_text(xss_id)
    page.get_by_label("Action").fill("key.*")
    page.get_by_label("Target id").fill(xss_id)
    page.get_by_role("button", name="Apply filters").click()
    expect(table.locator("tbody tr")).to_have_count(2)
    page.get_by_label("Action").fill("user.*")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No entries match.")).to_be_visible()
    # A time range that ends before anything happened.
    page.get_by_label("Action").fill("")
    page.get_by_label("Target id").fill("")
    page.get_by_label("Until").fill("2020-01-01T00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No entries match.")).to_be_visible()
    assert_accessible(page, "the audit log with nothing matching")
    page.get_by_label("Until").fill("")
    page.get_by_label("From").fill("2020-01-01T00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(table.locator("tbody tr")).to_have_count(25)


def test_the_keyboard_opens_an_entry(page: Page, site: Site) -> None:
    sign_in(page, site, start="/audit-log")
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_focused()
    summary = page.get_by_text("Before and after").first
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("details.changes").first).to_have_attribute("open", "")


def test_loading_failure_and_a_refused_filter(page: Page, site: Site) -> None:
    sign_in(page, site)
    held: list[Route] = []
    page.route("**/api/v1/audit-log?*", lambda route: held.append(route))
    page.goto("/audit-log")
    expect(page.get_by_role("status").filter(has_text="Loading the audit log")).to_be_visible()
    for _ in range(200):  # the route's handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the audit log request was not held"
    assert_accessible(page, "the audit log loading")
    held[0].fulfill(
        status=503,
        content_type="application/problem+json",
        body='{"title":"Database unavailable","status":503,"detail":"It did not answer."}',
    )
    expect(page.get_by_role("alert").filter(has_text="Database unavailable")).to_be_visible()
    assert_accessible(page, "the audit log, failed")
    page.unroute("**/api/v1/audit-log?*")

    # A 422 naming a field marks that field.
    def refuse(route: Route) -> None:
        route.fulfill(
            status=422,
            content_type="application/problem+json",
            body='{"title":"Invalid input","status":422,'
            '"detail":"Give a time zone, e.g. 2026-01-01T00:00:00Z.","field":"since"}',
        )

    page.route("**/api/v1/audit-log?*", refuse)
    page.get_by_role("button", name="Apply filters").click()
    since = page.get_by_label("From")
    expect(since).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#audit-since-error")).to_have_text(
        "Give a time zone, e.g. 2026-01-01T00:00:00Z."
    )
    expect(since).to_have_attribute("aria-describedby", re.compile("audit-since-error"))
    expect(page.get_by_role("alert").filter(has_text="Invalid input")).to_be_visible()
    assert_accessible(page, "the audit log with a refused filter")
    page.unroute("**/api/v1/audit-log?*")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("region", name="Audit log table")).to_be_visible()
    expect(since).not_to_have_attribute("aria-invalid", "true")


def test_a_session_without_the_audit_scope_sees_the_403_explained(page: Page, site: Site) -> None:
    with site.api() as client:
        made = client.post("/api/v1/keys", json={"name": "reader", "scopes": ["keys:read"]})
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
    page.goto("/sign-in?next=/audit-log")
    page.get_by_text("Sign in with an API key").click()
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Sign in with the key").click()
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Forbidden")
    expect(page.get_by_text("needs the audit-log:read scope")).to_be_visible()
    expect(page.get_by_role("region", name="Audit log table")).to_have_count(0)
    assert_accessible(page, "the audit log refused")
