"""The events page (/events): the live tail with its type-pattern filter, the recent events by
pages, an event's envelope and data, publishing a test event, its states, and user text
rendered as text, in Chromium against a served Forecourt."""

from __future__ import annotations

import json
import re
from typing import Any

from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import sign_in
from playwright.sync_api import Page, Route, expect

SCRIPT = "<script>window.__xss = 1</script>"
IMG = '<img src=x onerror="window.__xss = 2">'


def register(site: Site, *types: str) -> None:
    with site.api() as client:
        for name in types:
            known = client.post("/api/v1/event-types", json={"name": name})
            assert known.status_code in (201, 409), known.text


def publish(site: Site, event_type: str, data: Any = None, **fields: Any) -> dict[str, Any]:
    with site.api() as client:
        made = client.post("/api/v1/events", json={"type": event_type, "data": data, **fields})
        assert made.status_code == 201, made.text
        body: dict[str, Any] = made.json()
        return body


def open_events(page: Page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_focused()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()


def test_the_tail_follows_the_stream_through_its_filter(page: Page, site: Site) -> None:
    register(site, "order.created", "invoice.paid")
    sign_in(page, site)
    open_events(page)
    expect(page.get_by_text("No events match.")).to_be_visible()
    assert_accessible(page, "the events page, empty")

    # Published from an HTTP client, shown with no reload.
    first = publish(site, "order.created", {"n": 1}, subject="order-1")
    table = page.get_by_role("region", name="Events table")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr").first).to_contain_text("order.created")
    expect(table.locator("tbody tr").first).to_contain_text("order-1")
    assert_accessible(page, "the events page")

    # A type pattern: the tail follows events:invoice.* and lists only those.
    page.get_by_label("Type pattern").fill("invoice.*")
    page.get_by_role("button", name="Apply filter").click()
    expect(page.get_by_text("No events match.")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    publish(site, "order.created", {"n": 2})
    publish(site, "invoice.paid", {"n": 3})
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr").first).to_contain_text("invoice.paid")

    # Its detail: the envelope and the data as text.
    page.get_by_label("Type pattern").fill("")
    page.get_by_role("button", name="Apply filter").click()
    expect(table.locator("tbody tr")).to_have_count(3)
    table.get_by_role("button", name=f"Details of event {first['event_id']}").click()
    detail = page.get_by_role("dialog", name="Event")
    expect(detail).to_contain_text(first["event_id"])
    expect(detail).to_contain_text("order-1")
    expect(detail.locator("pre")).to_have_text(json.dumps({"n": 1}, indent=2))
    assert_accessible(page, "an event's detail")
    page.keyboard.press("Escape")
    expect(detail).to_have_count(0)


def test_recent_events_by_pages(page: Page, site: Site) -> None:
    register(site, "order.created")
    with site.api() as client:
        batch = [{"type": "order.created", "data": {"n": n}} for n in range(27)]
        made = client.post("/api/v1/events/batch", json={"events": batch})
        assert made.status_code == 201, made.text
    sign_in(page, site, start="/events")
    table = page.get_by_role("region", name="Events table")
    expect(table.locator("tbody tr")).to_have_count(25)
    page.get_by_role("button", name="Next page").click()
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_role("status").filter(has_text="Paused on an older page")).to_be_visible()
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    page.get_by_role("button", name="Previous page").click()
    expect(table.locator("tbody tr")).to_have_count(25)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()


def test_publish_a_test_event_checked_before_and_by_the_api(page: Page, site: Site) -> None:
    register(site, "order.created")
    sign_in(page, site, start="/events")
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    data = page.get_by_label("Data (JSON)")
    kind = page.get_by_label("Type", exact=True)

    # Not JSON: refused next to the field, nothing sent.
    kind.fill("order.created")
    data.fill("{n: 1}")
    page.get_by_role("button", name="Publish").click()
    expect(data).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#publish-data-error")).to_contain_text("This is not JSON")
    assert not [u for u in requests if u.endswith("/api/v1/events")]
    assert_accessible(page, "the publish form with bad JSON")

    # A type the API refuses: its 422 next to the type field.
    kind.fill("Not A Type")
    data.fill('{"n": 1}')
    page.get_by_role("button", name="Publish").click()
    expect(kind).to_have_attribute("aria-invalid", "true")
    expect(kind).to_have_attribute("aria-describedby", re.compile("publish-type-error"))
    expect(page.locator("#publish-type-error")).to_be_visible()
    expect(data).not_to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the publish form with a refused type")

    # Published: it shows in the tail.
    kind.fill("order.created")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status").filter(has_text="Published order.created")).to_be_visible()
    expect(kind).not_to_have_attribute("aria-invalid", "true")
    table = page.get_by_role("region", name="Events table")
    expect(table.locator("tbody tr")).to_have_count(1)
    with site.api() as client:
        [stored] = client.get("/api/v1/events").json()["items"]
    assert stored["data"] == {"n": 1}


def test_loading_and_a_failed_list(page: Page, site: Site) -> None:
    sign_in(page, site)
    held: list[Route] = []
    page.route("**/api/v1/events?*", lambda route: held.append(route))
    page.goto("/events")
    expect(page.get_by_role("status").filter(has_text="Loading events")).to_be_visible()
    for _ in range(200):  # the route's handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the events request was not held"
    assert_accessible(page, "the events page loading")
    held[0].fulfill(
        status=503,
        content_type="application/problem+json",
        body='{"title":"Database unavailable","status":503,"detail":"It did not answer."}',
    )
    expect(page.get_by_role("alert").filter(has_text="Database unavailable")).to_be_visible()
    assert_accessible(page, "the events page, failed")
    page.unroute("**/api/v1/events?*")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_text("No events match.")).to_be_visible()


def test_event_text_renders_as_text_and_nothing_runs(page: Page, site: Site) -> None:
    register(site, "order.created")
    sign_in(page, site, start="/events")
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    made = publish(
        site,
        "order.created",
        {"note": SCRIPT, "html": IMG},
        subject=f"{SCRIPT}{IMG}",
        source=f"/x/{IMG}",
    )
    table = page.get_by_role("region", name="Events table")
    row = table.locator("tbody tr").first
    # In the tail: the subject, as text.
    expect(row.locator("td").first).to_have_text(f"{SCRIPT}{IMG}")
    row.get_by_role("button", name="Details of event").click()
    detail = page.get_by_role("dialog", name="Event")
    expect(detail).to_contain_text(f"{SCRIPT}{IMG}")
    expect(detail).to_contain_text(f"/x/{IMG}")
    expect(detail.locator("pre")).to_contain_text(SCRIPT)
    expect(detail.locator("pre")).to_contain_text(json.dumps(IMG)[1:-1])
    page.keyboard.press("Escape")

    # The API refuses such a type, so a served list holding one stands in for it.
    forged = dict(made, type=f"{SCRIPT}{IMG}", event_id="evt_forged")

    def forge_list(route: Route) -> None:
        route.fulfill(json={"items": [forged], "next_cursor": None})

    def forge_one(route: Route) -> None:
        route.fulfill(json=forged)

    page.route("**/api/v1/events?*", forge_list)
    page.route("**/api/v1/events/evt_forged", forge_one)
    page.get_by_label("Type pattern").fill("")
    page.get_by_role("button", name="Apply filter").click()
    page.reload()
    expect(row.locator("th")).to_have_text(f"{SCRIPT}{IMG}")
    row.get_by_role("button", name="Details of event evt_forged").click()
    expect(detail).to_contain_text(f"Type{SCRIPT}{IMG}")
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, dialog img").count() == 0
    assert page.locator("main script, dialog script").count() == 0
