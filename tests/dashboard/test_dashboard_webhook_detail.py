"""An endpoint's page (/settings/webhooks/<id>): statistics, the delivery log, retry and
recovery, in Chromium against a served Forecourt delivering to a receiver on loopback."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture  # noqa: F401
from flows import sign_in
from hooks import (  # noqa: F401
    Receiver,
    add_endpoint,
    deliveries,
    hooks_site_fixture,
    receiver_fixture,
    wait_until,
)
from playwright.sync_api import Page, Route, expect

ONCE = {"kind": "none"}

XSS = {
    "script": "<script>window.__xss = 1</script>",
    "img": '<img src=x onerror="window.__xss = 2">',
}


def publish(site: Site, event_type: str, data: Any = None) -> None:
    with site.api() as client:
        known = client.post("/api/v1/event-types", json={"name": event_type})
        assert known.status_code in (201, 409), known.text
        made = client.post("/api/v1/events", json={"type": event_type, "data": data})
        assert made.status_code in (200, 201, 202), made.text


def statuses(site: Site, endpoint_id: str) -> list[str]:
    with site.api() as client:
        return [d["status"] for d in deliveries(client, endpoint_id)]


def settled(site: Site, endpoint_id: str, count: int) -> list[dict[str, Any]]:
    """The endpoint's deliveries once ``count`` of them are finished."""
    found: list[dict[str, Any]] = []

    def done() -> bool:
        nonlocal found
        with site.api() as client:
            found = deliveries(client, endpoint_id)
        return sum(d["status"] in ("succeeded", "failed") for d in found) >= count

    wait_until(done, f"{count} deliveries finished")
    return found


def test_statistics_and_the_delivery_log(page: Page, site: Site, receiver: Receiver) -> None:
    receiver.body = b"thanks from the receiver"
    with site.api() as client:
        made = add_endpoint(client, receiver.url, event_types=["order.*"], retry_policy=ONCE)
    publish(site, "order.created", {"n": 1})
    publish(site, "order.shipped", {"n": 2})
    settled(site, made["id"], 2)

    sign_in(page, site, start="/settings/webhooks")
    page.get_by_role("link", name=receiver.url).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Webhook {receiver.url}")
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    stats = page.get_by_role("region", name="Statistics table")
    last_hour = stats.get_by_role("row").filter(has_text="Last hour")
    expect(last_hour).to_contain_text("100.0 %")
    expect(last_hour.locator("td").nth(0)).to_have_text("2")
    expect(last_hour.locator("td").nth(4)).to_contain_text("ms")
    # The chart, and the same figures as a table.
    expect(
        page.get_by_role(
            "img", name="Attempts by hour over the last 24 hours: 2 succeeded, 0 failed"
        )
    ).to_be_visible()
    page.get_by_text("Attempts by hour, as a table").click()
    by_hour = page.get_by_role("region", name="Attempts by hour table")
    expect(by_hour.locator("tbody tr")).to_have_count(24)
    succeeded = by_hour.locator("tbody tr td:nth-of-type(1)").all_inner_texts()
    assert sum(int(n) for n in succeeded) == 2

    log = page.get_by_role("region", name="Deliveries table")
    expect(log.locator("tbody tr")).to_have_count(2)
    shipped = log.locator("tbody tr").filter(has_text="order.shipped")
    expect(shipped).to_contain_text("succeeded")
    expect(shipped).to_contain_text("200")
    assert_accessible(page, "an endpoint's page")
    shipped.get_by_role("button", name="Attempts of delivery").click()
    attempts = page.get_by_role("dialog", name="Attempts of this delivery")
    expect(attempts).to_contain_text("Attempt 1: HTTP 200")
    expect(attempts.locator(".excerpt")).to_have_text("thanks from the receiver")
    assert_accessible(page, "the attempt log")
    page.keyboard.press("Escape")
    expect(attempts).to_have_count(0)


def test_retry_a_failed_delivery_after_fixing_the_receiver(
    page: Page, site: Site, receiver: Receiver
) -> None:
    receiver.status, receiver.body = 503, b"down for maintenance"
    with site.api() as client:
        made = add_endpoint(client, receiver.url, retry_policy=ONCE)
    publish(site, "order.created")
    [failed] = settled(site, made["id"], 1)
    assert failed["status"] == "failed"

    sign_in(page, site, start=f"/settings/webhooks/{made['id']}")
    log = page.get_by_role("region", name="Deliveries table")
    line = log.locator("tbody tr").filter(has_text="order.created")
    expect(line).to_contain_text("failed")
    expect(line).to_contain_text("503")
    failing = (
        page.get_by_role("region", name="Statistics table")
        .get_by_role("row")
        .filter(has_text="Last hour")
    )
    expect(failing).to_contain_text("0.0 %")

    receiver.status, receiver.body = 200, b"ok"
    line.get_by_role("button", name=f"Retry delivery {failed['id']}").click()
    expect(page.get_by_role("status").filter(has_text="queued again")).to_be_visible()
    receiver.wait_for(2)
    wait_until(lambda: statuses(site, made["id"]) == ["succeeded"], "the retry succeeded")
    page.get_by_role("button", name="Refresh").click()
    expect(line).to_contain_text("succeeded")
    expect(line.locator("td").nth(3)).to_have_text("2")


def test_filters_and_pages_of_deliveries(page: Page, site: Site, receiver: Receiver) -> None:
    with site.api() as client:
        made = add_endpoint(client, receiver.url, retry_policy=ONCE)
    for n in range(27):
        publish(site, "order.created", {"n": n})
    settled(site, made["id"], 27)
    receiver.status = 500
    publish(site, "invoice.paid")
    settled(site, made["id"], 28)

    sign_in(page, site, start=f"/settings/webhooks/{made['id']}")
    log = page.get_by_role("region", name="Deliveries table")
    rows = log.locator("tbody tr")
    expect(rows).to_have_count(25)
    pager = page.get_by_role("navigation", name="Pages of deliveries")
    pager.get_by_role("button", name="Next page").click()
    expect(rows).to_have_count(3)
    expect(pager.get_by_role("button", name="Next page")).to_be_disabled()
    pager.get_by_role("button", name="Previous page").click()
    expect(rows).to_have_count(25)

    filters = page.get_by_role("form", name="Filter deliveries")
    filters.get_by_label("Status").select_option("failed")
    filters.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("invoice.paid")
    filters.get_by_label("Status").select_option("")
    filters.get_by_label("Event type").fill("order.*")
    filters.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(25)
    expect(page.get_by_text("invoice.paid")).to_have_count(0)
    filters.get_by_label("Event type").fill("")
    future = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    filters.get_by_label("Since").fill(future)
    filters.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No deliveries match.")).to_be_visible()
    assert_accessible(page, "an endpoint's page, filtered to nothing")


def test_recover_every_failed_delivery_since_a_time(
    page: Page, site: Site, receiver: Receiver
) -> None:
    receiver.status = 500
    with site.api() as client:
        made = add_endpoint(client, receiver.url, retry_policy=ONCE)
    for _ in range(3):
        publish(site, "order.created")
    settled(site, made["id"], 3)
    receiver.status = 200

    sign_in(page, site, start=f"/settings/webhooks/{made['id']}")
    recover = page.get_by_role("form", name="Recover failed deliveries")
    recover.get_by_role("button", name="Recover failed deliveries").click()
    since = recover.get_by_label("Failed since")
    expect(since).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#recover-since-error")).to_be_visible()
    an_hour_ago = (datetime.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    since.fill(an_hour_ago)
    recover.get_by_role("button", name="Recover failed deliveries").click()
    expect(
        page.get_by_role("status").filter(has_text="3 failed deliveries queued again")
    ).to_be_visible()
    receiver.wait_for(6)
    wait_until(lambda: statuses(site, made["id"]) == ["succeeded"] * 3, "recovered")
    assert_accessible(page, "an endpoint's page after recovery")


def test_a_missing_endpoint_and_a_failed_log_say_why(page: Page, site: Site) -> None:
    sign_in(page, site, start="/settings/webhooks/ep_missing")
    expect(page.get_by_role("alert").first).to_contain_text("Not found")
    assert_accessible(page, "a missing endpoint's page")


def test_the_log_says_it_is_loading_and_when_it_fails(
    page: Page, site: Site, receiver: Receiver
) -> None:
    with site.api() as client:
        made = add_endpoint(client, receiver.url)
    sign_in(page, site)
    held: list[Route] = []
    page.route("**/deliveries?*", lambda route: held.append(route))
    page.goto(f"/settings/webhooks/{made['id']}")
    expect(page.get_by_role("status").filter(has_text="Loading deliveries")).to_be_visible()
    for _ in range(200):  # the route's handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the log request was not held"
    held[0].fulfill(
        status=503,
        content_type="application/problem+json",
        body='{"title":"Database unavailable","status":503,"detail":"It did not answer."}',
    )
    expect(page.get_by_role("alert").filter(has_text="Database unavailable")).to_be_visible()
    assert_accessible(page, "an endpoint's page, log failed")
    page.unroute("**/deliveries?*")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_text("No deliveries match.")).to_be_visible()


def test_user_text_renders_as_text_and_nothing_runs(
    page: Page, site: Site, receiver: Receiver
) -> None:
    """An event type's description, an event's data (echoed back by the receiver into the
    response excerpt) and an endpoint's description, all holding markup, shown as text."""
    receiver.echo = True
    description = f"{XSS['script']} {XSS['img']}"
    with site.api() as client:
        typed = client.post(
            "/api/v1/event-types", json={"name": "xss.probe", "description": description}
        )
        assert typed.status_code == 201, typed.text
        made = add_endpoint(
            client, receiver.url, description=XSS["img"], event_types=["xss.*"], retry_policy=ONCE
        )
    publish(site, "xss.probe", {"html": XSS["script"], "img": XSS["img"]})
    settled(site, made["id"], 1)

    sign_in(page, site, start="/settings/webhooks")
    expect(page.get_by_text(XSS["img"], exact=True)).to_be_visible()
    page.get_by_role("button", name=f"Edit {receiver.url}").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    expect(dialog.get_by_text(description, exact=True)).to_be_visible()
    page.keyboard.press("Escape")

    page.get_by_role("link", name=receiver.url).click()
    page.get_by_role("button", name="Attempts of delivery").click()
    excerpt = page.get_by_role("dialog").locator(".excerpt")
    expect(excerpt).to_contain_text(XSS["script"])
    expect(excerpt).to_contain_text('onerror=\\"window.__xss = 2\\"')
    expect(page.get_by_text(XSS["img"], exact=True)).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert page.locator("main img, dialog img").count() == 0
    assert page.locator("main script, dialog script").count() == 0
    assert page.evaluate("window.__xss") is None
