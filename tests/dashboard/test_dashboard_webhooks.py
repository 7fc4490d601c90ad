"""The webhooks page (/settings/webhooks), in Chromium against a served Forecourt that
delivers to a real receiver on loopback."""

from __future__ import annotations

import re

from browser import Site, assert_accessible, create_user
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture  # noqa: F401
from flows import sign_in
from hooks import Receiver, add_endpoint, hooks_site_fixture, receiver_fixture  # noqa: F401
from playwright.sync_api import Locator, Page, Route, expect

PAGE = "/settings/webhooks"


def row(page: Page, url: str) -> Locator:
    return page.locator("tbody tr").filter(
        has=page.get_by_role("rowheader").filter(has=page.get_by_role("link", name=url, exact=True))
    )


def open_webhooks(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_focused()


def test_add_an_endpoint_see_its_secret_once_and_test_it(
    page: Page, site: Site, receiver: Receiver
) -> None:
    sign_in(page, site)
    open_webhooks(page)
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    assert_accessible(page, "the webhooks page, empty")

    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add an endpoint")
    expect(dialog.get_by_label("URL")).to_be_focused()
    # The selector lists the catalog's categories, each with its wildcard.
    alerts = dialog.get_by_role("group", name="alert", exact=True)
    expect(alerts.get_by_label("all (alert.*)")).to_be_visible()
    assert_accessible(page, "the add-endpoint dialog")
    dialog.get_by_label("URL").fill(receiver.url)
    dialog.get_by_label("Description (optional)").fill("the build server")
    alerts.get_by_label("all (alert.*)").check()
    dialog.get_by_label("Other types or patterns").fill("invoice.*\ninvoice.paid")
    dialog.get_by_label("Custom headers (optional)").fill("X-Team: builds")
    dialog.get_by_label("Retry policy").select_option("linear")
    dialog.get_by_label("Attempts at most").fill("3")
    dialog.get_by_label("Seconds between attempts").fill("30")
    dialog.get_by_label("Rate limit (optional)").fill("5")
    dialog.get_by_role("button", name="Add endpoint").click()

    shown = page.get_by_role("dialog", name="Endpoint added")
    expect(shown).to_contain_text("you will not see this again")
    secret = shown.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    assert_accessible(page, "the new endpoint's secret")
    shown.get_by_role("button", name="Done").click()
    expect(shown).to_have_count(0)
    assert secret not in page.content()

    with site.api() as client:
        [stored] = client.get("/api/v1/webhooks").json()["items"]
    assert stored["url"] == receiver.url
    assert stored["description"] == "the build server"
    assert sorted(stored["event_types"]) == ["alert.*", "invoice.*", "invoice.paid"]
    assert stored["headers"] == {"X-Team": "builds"}
    assert stored["retry_policy"] == {"kind": "linear", "max_attempts": 3, "interval_s": 30}
    assert stored["rate_limit_per_s"] == 5

    line = row(page, receiver.url)
    expect(line).to_contain_text("alert.*")
    expect(line).to_contain_text("the build server")
    line.get_by_role("button", name=f"Test {receiver.url}").click()
    result = page.locator(".test-result")
    expect(result).to_contain_text("Test delivered: HTTP 200")
    [hit] = receiver.wait_for(1)
    assert hit.headers["X-Team"] == "builds"
    assert b"webhook.test" in hit.body
    assert_accessible(page, "the webhooks page with a test result")


def test_a_failing_test_shows_the_answer(page: Page, site: Site, receiver: Receiver) -> None:
    receiver.status, receiver.body = 500, b"receiver says no"
    with site.api() as client:
        add_endpoint(client, receiver.url)
    sign_in(page, site, start=PAGE)
    row(page, receiver.url).get_by_role("button", name=f"Test {receiver.url}").click()
    result = page.locator(".test-result")
    expect(result).to_contain_text("Test failed: HTTP 500")
    expect(result.locator(".excerpt")).to_have_text("receiver says no")


def test_a_refused_field_is_shown_next_to_it(page: Page, site: Site) -> None:
    sign_in(page, site, start=PAGE)
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add an endpoint")
    url = dialog.get_by_label("URL")
    url.fill("ftp://example.com/hook")
    dialog.get_by_role("button", name="Add endpoint").click()
    expect(dialog.get_by_role("alert").first).to_be_visible()
    expect(url).to_have_attribute("aria-invalid", "true")
    assert "endpoint-url-error" in (url.get_attribute("aria-describedby") or "").split()
    expect(page.locator("#endpoint-url-error")).to_have_attribute("role", "alert")
    assert_accessible(page, "the add-endpoint dialog with errors")

    # A header line that is not "Name: value" is refused before sending.
    url.fill("http://127.0.0.1:9/hook")
    dialog.get_by_label("Custom headers (optional)").fill("no colon here")
    dialog.get_by_role("button", name="Add endpoint").click()
    headers = dialog.get_by_label("Custom headers (optional)")
    expect(headers).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#endpoint-headers-error")).to_contain_text("no colon here")

    # A custom secret the API refuses is marked too.
    headers.fill("")
    dialog.get_by_label("Use my own").check()
    dialog.get_by_label("Secret", exact=True).fill("not-a-secret")
    dialog.get_by_role("button", name="Add endpoint").click()
    expect(dialog.get_by_label("Secret", exact=True)).to_have_attribute("aria-invalid", "true")
    with site.api() as client:
        assert client.get("/api/v1/webhooks").json()["items"] == []


def test_a_custom_secret_is_never_shown(page: Page, site: Site, receiver: Receiver) -> None:
    mine = "whsec_" + "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
    sign_in(page, site, start=PAGE)
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add an endpoint")
    dialog.get_by_label("URL").fill(receiver.url)
    dialog.get_by_label("Use my own").check()
    dialog.get_by_label("Secret", exact=True).fill(mine)
    dialog.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(row(page, receiver.url)).to_be_visible()
    assert mine not in page.content()


def test_toggle_edit_and_delete(page: Page, site: Site, receiver: Receiver) -> None:
    with site.api() as client:
        made = add_endpoint(client, receiver.url, description="before")
    sign_in(page, site, start=PAGE)
    line = row(page, receiver.url)
    switch = line.get_by_role("switch", name=f"Enabled: {receiver.url}")
    expect(switch).to_be_checked()
    switch.click()
    expect(switch).not_to_be_checked()
    expect(page.get_by_role("status").filter(has_text="disabled")).to_be_visible()
    with site.api() as client:
        assert client.get(f"/api/v1/webhooks/{made['id']}").json()["enabled"] is False
    switch.click()
    expect(switch).to_be_checked()

    line.get_by_role("button", name=f"Edit {receiver.url}").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    expect(dialog.get_by_label("Description (optional)")).to_have_value("before")
    expect(dialog.get_by_label("Secret", exact=True)).to_have_count(0)
    dialog.get_by_label("Description (optional)").fill("after")
    dialog.get_by_role("button", name="Save endpoint").click()
    expect(dialog).to_have_count(0)
    expect(line).to_contain_text("after")
    with site.api() as client:
        assert client.get(f"/api/v1/webhooks/{made['id']}").json()["description"] == "after"

    line.get_by_role("button", name=f"Delete {receiver.url}").click()
    confirm = page.get_by_role("dialog", name=f"Delete {receiver.url}?")
    expect(confirm).to_contain_text("cannot be undone")
    assert_accessible(page, "the delete confirmation")
    confirm.get_by_role("button", name="Cancel").click()
    expect(line.get_by_role("button", name=f"Delete {receiver.url}")).to_be_focused()
    line.get_by_role("button", name=f"Delete {receiver.url}").click()
    confirm.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    with site.api() as client:
        assert client.get(f"/api/v1/webhooks/{made['id']}").status_code == 404


def test_reveal_and_rotate_the_secret(page: Page, site: Site, receiver: Receiver) -> None:
    with site.api() as client:
        made = add_endpoint(client, receiver.url)
    sign_in(page, site, start=PAGE)
    row(page, receiver.url).get_by_role("button", name=f"Secret of {receiver.url}").click()
    dialog = page.get_by_role("dialog", name=f"Signing secret of {receiver.url}")
    dialog.get_by_role("button", name="Reveal").click()
    expect(dialog.get_by_label("Secret")).to_have_value(made["secret"])
    assert_accessible(page, "the secret dialog")
    dialog.get_by_role("button", name="Rotate").click()
    expect(dialog).to_contain_text("the old one signs too")
    dialog.get_by_role("button", name="Rotate now").click()
    expect(dialog.get_by_role("status")).to_contain_text("The old secret also signs until")
    rotated = dialog.get_by_label("Secret").input_value()
    assert rotated.startswith("whsec_") and rotated != made["secret"]
    with site.api() as client:
        assert client.get(f"/api/v1/webhooks/{made['id']}/secret").json()["secret"] == rotated
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
    assert rotated not in page.content()


def test_a_viewer_sees_endpoints_without_the_means_to_change_them(
    page: Page, site: Site, receiver: Receiver
) -> None:
    with site.api() as client:
        add_endpoint(client, receiver.url, headers={"X-Token": "hidden-value"})
    create_user(site.url, site.owner_key, "viewer@example.com", role="viewer")
    viewer = Site(site.url, site.owner_key, "viewer@example.com", site.password)
    sign_in(page, viewer, start=PAGE)
    line = row(page, receiver.url)
    expect(line.get_by_role("switch")).to_be_disabled()
    expect(page.get_by_role("button", name="Add endpoint")).to_have_count(0)
    expect(
        page.get_by_role("button", name=re.compile("^(Test|Edit|Delete|Secret of) "))
    ).to_have_count(0)
    assert "hidden-value" not in page.content()
    assert_accessible(page, "the webhooks page of a viewer")


def test_pages_of_endpoints_follow_the_cursor(page: Page, site: Site, receiver: Receiver) -> None:
    with site.api() as client:
        for n in range(23):
            add_endpoint(client, f"{receiver.url}/{n:02}")
    sign_in(page, site, start=PAGE)
    body_rows = page.locator("tbody tr")
    expect(body_rows).to_have_count(20)
    pager = page.get_by_role("navigation", name="Pages of endpoints")
    expect(pager.get_by_role("button", name="Previous page")).to_be_disabled()
    pager.get_by_role("button", name="Next page").click()
    expect(body_rows).to_have_count(3)
    expect(pager.get_by_role("button", name="Next page")).to_be_disabled()
    assert_accessible(page, "the second page of endpoints")
    pager.get_by_role("button", name="Previous page").click()
    expect(body_rows).to_have_count(20)


def test_a_failed_list_says_why_and_tries_again(page: Page, site: Site) -> None:
    sign_in(page, site)
    failing = {
        "status": 503,
        "content_type": "application/problem+json",
        "body": '{"type":"urn:forecourt:problem:unavailable","title":"Database unavailable",'
        '"status":503,"detail":"The database did not answer."}',
    }
    page.route("**/api/v1/webhooks?*", lambda route: route.fulfill(**failing))
    open_webhooks(page)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Database unavailable")
    expect(alert).to_contain_text("The database did not answer.")
    assert_accessible(page, "the webhooks page, failed")
    page.unroute("**/api/v1/webhooks?*")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)


def test_the_list_says_it_is_loading_until_it_arrives(page: Page, site: Site) -> None:
    sign_in(page, site)
    held: list[Route] = []
    page.route("**/api/v1/webhooks?*", lambda route: held.append(route))
    open_webhooks(page)
    expect(page.get_by_role("status").filter(has_text="Loading endpoints")).to_be_visible()
    assert_accessible(page, "the webhooks page, loading")
    assert held, "the list request was not held"
    held[0].continue_()
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    expect(page.get_by_text("Loading endpoints")).to_have_count(0)


def test_keyboard_alone_adds_an_endpoint(page: Page, site: Site, receiver: Receiver) -> None:
    sign_in(page, site, start=PAGE)
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Add endpoint")).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Add an endpoint")
    expect(dialog.get_by_label("URL")).to_be_focused()
    page.keyboard.type(receiver.url)
    target = dialog.get_by_role("group", name="alert", exact=True).get_by_label("all (alert.*)")
    for _ in range(60):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            break
    expect(target).to_be_focused()
    page.keyboard.press("Space")
    expect(target).to_be_checked()
    page.keyboard.press("Enter")
    shown = page.get_by_role("dialog", name="Endpoint added")
    expect(shown).to_be_visible()
    page.keyboard.press("Escape")
    expect(shown).to_have_count(0)
    line = row(page, receiver.url)
    expect(line).to_contain_text("alert.*")
    # The test button, reached and pressed from the keyboard.
    button = line.get_by_role("button", name=f"Test {receiver.url}")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.locator(".test-result")).to_contain_text("Test delivered")
