"""The API keys page (/settings/api-keys), in Chromium against a served Forecourt."""

from __future__ import annotations

import re

from browser import Site, assert_accessible, create_user
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import open_keys, sign_in
from playwright.sync_api import Locator, Page, Route, expect

XSS_NAMES = (
    '<img src=x onerror="window.__xss = 1">',
    "<script>window.__xss = 2</script>",
)


def row(page: Page, name: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=name, exact=True))


def test_create_a_key_see_it_once_use_it_and_revoke_it(page: Page, site: Site) -> None:
    sign_in(page, site)
    open_keys(page)
    assert_accessible(page, "the API keys page")

    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create an API key")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name")).to_be_focused()
    assert_accessible(page, "the create-key dialog")
    dialog.get_by_label("Name").fill("ci-reader")
    events = dialog.get_by_role("group", name="events", exact=True)
    events.get_by_label("read").check()
    dialog.get_by_role("button", name="Create key").click()

    shown = page.get_by_role("dialog", name="Key created")
    expect(shown).to_be_visible()
    expect(shown).to_contain_text("you will not see this again")
    secret = shown.get_by_label("The key ci-reader").input_value()
    assert secret.startswith("fck_")
    assert_accessible(page, "the new key's dialog")
    shown.get_by_role("button", name="Copy").click()
    expect(shown.get_by_role("status")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The key works for what it was given, and nothing else.
    with site.api(secret) as client:
        assert client.get("/api/v1/events").status_code == 200
        assert client.get("/api/v1/keys").status_code == 403

    shown.get_by_role("button", name="Done").click()
    expect(shown).to_have_count(0)
    created = row(page, "ci-reader")
    expect(created).to_contain_text("events:read")
    expect(created).to_contain_text("active")
    expect(created).to_contain_text(secret[:12])
    assert secret not in page.content()
    page.reload()
    expect(row(page, "ci-reader")).to_be_visible()
    assert secret not in page.content()

    created.get_by_role("button", name="Revoke ci-reader").click()
    confirm = page.get_by_role("dialog", name="Revoke ci-reader?")
    expect(confirm).to_contain_text("cannot be undone")
    assert_accessible(page, "the revoke confirmation")
    confirm.get_by_role("button", name="Revoke key").click()
    expect(confirm).to_have_count(0)
    expect(row(page, "ci-reader")).to_contain_text("revoked")
    expect(page.get_by_role("status").filter(has_text="revoked")).to_be_visible()
    with site.api(secret) as client:
        assert client.get("/api/v1/events").status_code == 401


def test_cancel_and_escape_revoke_nothing(page: Page, site: Site) -> None:
    with site.api() as client:
        assert client.post(
            "/api/v1/keys", json={"name": "keeper", "scopes": ["events:read"]}
        ).is_success
    sign_in(page, site, start="/settings/api-keys")
    keeper = row(page, "keeper")
    keeper.get_by_role("button", name="Revoke keeper").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    # Focus returns to the button that opened the dialog.
    expect(keeper.get_by_role("button", name="Revoke keeper")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(keeper).to_contain_text("active")


def test_rotate_shows_the_new_key_once_and_the_old_keeps_working(page: Page, site: Site) -> None:
    with site.api() as client:
        made = client.post("/api/v1/keys", json={"name": "rotor", "scopes": ["events:read"]})
        old = made.json()["key"]
    sign_in(page, site, start="/settings/api-keys")
    row(page, "rotor").get_by_role("button", name="Rotate rotor").click()
    page.get_by_role("dialog", name="Rotate rotor?").get_by_role(
        "button", name="Rotate key"
    ).click()
    shown = page.get_by_role("dialog", name="Key rotated")
    new = shown.get_by_label("The key rotor").input_value()
    assert new.startswith("fck_") and new != old
    expect(shown).to_contain_text("The old secret works until")
    expect(shown).to_contain_text("you will not see this again")
    shown.get_by_role("button", name="Done").click()
    assert new not in page.content()
    with site.api(new) as fresh, site.api(old) as previous:
        assert fresh.get("/api/v1/events").status_code == 200
        assert previous.get("/api/v1/events").status_code == 200


def test_a_refused_field_is_shown_next_to_it(page: Page, site: Site) -> None:
    sign_in(page, site, start="/settings/api-keys")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create an API key")
    name = dialog.get_by_label("Name")
    name.fill("x" * 201)
    dialog.get_by_role("button", name="Create key").click()

    expect(dialog.get_by_role("alert").first).to_contain_text("Invalid input")
    expect(name).to_have_attribute("aria-invalid", "true")
    described = name.get_attribute("aria-describedby") or ""
    assert "key-name-error" in described.split()
    message = page.locator("#key-name-error")
    expect(message).to_have_attribute("role", "alert")
    expect(message).to_contain_text("200")
    scopes = dialog.get_by_role("group", name="Scopes")
    expect(scopes).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#key-scopes-error")).to_be_visible()
    assert_accessible(page, "the create-key dialog with errors")

    # Fixed, it goes through; nothing was created by the refused attempt.
    name.fill("fixed")
    dialog.get_by_role("group", name="events", exact=True).get_by_label("read").check()
    dialog.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("dialog", name="Key created")).to_be_visible()
    with site.api() as client:
        names = [
            k["name"] for k in client.get("/api/v1/keys", params={"limit": 200}).json()["items"]
        ]
    assert names.count("fixed") == 1
    assert "x" * 201 not in names


def test_key_names_render_as_text_and_nothing_runs(page: Page, site: Site) -> None:
    with site.api() as client:
        for name in XSS_NAMES:
            made = client.post("/api/v1/keys", json={"name": name, "scopes": ["events:read"]})
            assert made.status_code == 201, made.text
    sign_in(page, site, start="/settings/api-keys")
    for name in XSS_NAMES:
        expect(page.get_by_role("rowheader", name=name, exact=True)).to_have_text(name)
    assert page.locator("table img").count() == 0
    assert page.locator("table script").count() == 0
    # The names in a dialog's title, too.
    row(page, XSS_NAMES[0]).get_by_role("button", name=re.compile("^Revoke")).click()
    expect(page.get_by_role("dialog")).to_contain_text(XSS_NAMES[0])
    page.keyboard.press("Escape")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__xss") is None


def test_pages_of_keys_follow_the_cursor(page: Page, site: Site) -> None:
    with site.api() as client:
        for n in range(24):
            made = client.post(
                "/api/v1/keys", json={"name": f"bulk-{n:02}", "scopes": ["events:read"]}
            )
            assert made.status_code == 201, made.text
    sign_in(page, site, start="/settings/api-keys")
    body_rows = page.locator("tbody tr")
    expect(body_rows).to_have_count(20)
    expect(page.get_by_role("rowheader", name="bulk-23")).to_be_visible()
    pager = page.get_by_role("navigation", name="Pages of keys")
    expect(pager.get_by_role("button", name="Previous page")).to_be_disabled()
    pager.get_by_role("button", name="Next page").click()
    # 24 made here, plus the owner key of the first start.
    expect(body_rows).to_have_count(5)
    expect(page.get_by_role("rowheader", name="bulk-00")).to_be_visible()
    expect(pager.get_by_role("button", name="Next page")).to_be_disabled()
    assert_accessible(page, "the second page of keys")
    pager.get_by_role("button", name="Previous page").click()
    expect(page.get_by_role("rowheader", name="bulk-23")).to_be_visible()


def test_a_failed_list_says_why_and_tries_again(page: Page, site: Site) -> None:
    sign_in(page, site)
    failing = {
        "status": 503,
        "content_type": "application/problem+json",
        "body": '{"type":"urn:forecourt:problem:unavailable","title":"Database unavailable",'
        '"status":503,"detail":"The database did not answer."}',
    }
    page.route("**/api/v1/keys?*", lambda route: route.fulfill(**failing))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Database unavailable")
    expect(alert).to_contain_text("The database did not answer.")
    assert_accessible(page, "the API keys page, failed")
    page.unroute("**/api/v1/keys?*")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("table")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)


def test_no_keys_says_so(page: Page, site: Site) -> None:
    sign_in(page, site)
    page.route(
        "**/api/v1/keys?*",
        lambda route: route.fulfill(json={"items": [], "next_cursor": None}),
    )
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_text("No keys yet")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)
    assert_accessible(page, "the API keys page, empty")


def test_a_viewer_sees_keys_without_the_means_to_change_them(page: Page, site: Site) -> None:
    create_user(site.url, site.owner_key, "viewer@example.com", role="viewer")
    viewer = Site(site.url, site.owner_key, "viewer@example.com", site.password)
    sign_in(page, viewer, start="/settings/api-keys")
    expect(page.get_by_role("table")).to_be_visible()
    expect(page.get_by_role("button", name="Create key")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^(Revoke|Rotate)"))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Usage of")).first).to_be_visible()


def test_keyboard_alone_creates_a_key(page: Page, site: Site) -> None:
    sign_in(page, site, start="/settings/api-keys")
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create key")).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Create an API key")
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.type("typed-key")
    page.keyboard.press("Tab")
    expect(dialog.get_by_label("Description (optional)")).to_be_focused()
    # Through the scope boxes to events: read, ticked with the space bar.
    target = dialog.get_by_role("group", name="events", exact=True).get_by_label("read")
    for _ in range(40):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            break
    expect(target).to_be_focused()
    page.keyboard.press("Space")
    expect(target).to_be_checked()
    page.keyboard.press("Enter")
    shown = page.get_by_role("dialog", name="Key created")
    expect(shown).to_be_visible()
    assert shown.get_by_label("The key typed-key").input_value().startswith("fck_")
    page.keyboard.press("Escape")
    expect(shown).to_have_count(0)
    expect(row(page, "typed-key")).to_contain_text("events:read")


def test_a_key_s_usage_by_status_class(page: Page, site: Site) -> None:
    with site.api() as client:
        made = client.post("/api/v1/keys", json={"name": "busy", "scopes": ["events:read"]})
        secret = made.json()["key"]
    with site.api(secret) as client:
        for _ in range(3):
            assert client.get("/api/v1/events").status_code == 200
        assert client.get("/api/v1/keys").status_code == 403
    sign_in(page, site, start="/settings/api-keys")
    row(page, "busy").get_by_role("button", name="Usage of busy").click()
    dialog = page.get_by_role("dialog", name="Usage of busy")
    totals = dialog.get_by_label("Requests in the last 30 days")
    expect(totals).to_contain_text("Requests, 30 days4")
    expect(totals).to_contain_text("2xx3")
    expect(totals).to_contain_text("4xx1")
    chart = dialog.get_by_role("img", name=re.compile("Last hour, per minute: 4 requests"))
    expect(chart).to_be_visible()
    expect(chart.locator("canvas")).to_have_count(1)
    dialog.get_by_text("The figures as a table").click()
    expect(dialog.get_by_role("region", name="Usage table")).to_contain_text("4")
    assert_accessible(page, "the usage dialog")
    dialog.get_by_label("Last 30 days, per day").check()
    expect(
        dialog.get_by_role("img", name=re.compile("Last 30 days, per day: 4 requests"))
    ).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)


def test_a_key_never_used_says_so(page: Page, site: Site) -> None:
    with site.api() as client:
        assert client.post(
            "/api/v1/keys", json={"name": "idle", "scopes": ["events:read"]}
        ).is_success
    sign_in(page, site, start="/settings/api-keys")
    row(page, "idle").get_by_role("button", name="Usage of idle").click()
    dialog = page.get_by_role("dialog", name="Usage of idle")
    expect(dialog.get_by_text("No requests in this period.")).to_be_visible()
    expect(dialog.get_by_label("Requests in the last 30 days")).to_contain_text("Last usedNever")
    assert_accessible(page, "the usage dialog of an unused key")


def test_a_new_key_takes_the_chosen_tier(page: Page, site: Site) -> None:
    sign_in(page, site, start="/settings/api-keys")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Create an API key")
    tier = dialog.get_by_label("Rate-limit tier")
    expect(tier).to_have_value("free")
    expect(tier.locator("option", has_text="pro")).to_have_text(
        "pro: 600 a minute, 20,000 an hour, 200,000 a day"
    )
    tier.select_option("pro")
    dialog.get_by_label("Name").fill("paid")
    dialog.get_by_role("group", name="events", exact=True).get_by_label("read").check()
    assert_accessible(page, "the create-key dialog with its tiers")
    dialog.get_by_role("button", name="Create key").click()
    page.get_by_role("dialog", name="Key created").get_by_role("button", name="Done").click()
    expect(row(page, "paid")).to_contain_text("pro")
    with site.api() as client:
        [paid] = [
            k
            for k in client.get("/api/v1/keys", params={"limit": 200}).json()["items"]
            if k["name"] == "paid"
        ]
    assert paid["tier"] == "pro"


def test_the_list_says_it_is_loading_until_it_arrives(page: Page, site: Site) -> None:
    sign_in(page, site)
    held: list[Route] = []
    page.route("**/api/v1/keys?*", lambda route: held.append(route))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("status").filter(has_text="Loading keys")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)
    assert_accessible(page, "the API keys page, loading")
    assert held, "the list request was not held"
    held[0].continue_()
    expect(page.get_by_role("table")).to_be_visible()
    expect(page.get_by_text("Loading keys")).to_have_count(0)
