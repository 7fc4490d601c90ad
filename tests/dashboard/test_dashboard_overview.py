"""The overview (/overview): cards from the summary, moved by the stream."""

from __future__ import annotations

from browser import Site, assert_accessible
from fixtures import backend_sqlite_fixture, browser_fixture, page_fixture, site_fixture  # noqa: F401
from flows import sign_in
from playwright.sync_api import Page, Route, expect


def test_cards_follow_events_published_elsewhere(page: Page, site: Site) -> None:
    summaries: list[str] = []
    page.on(
        "request",
        lambda request: (
            summaries.append(request.url) if request.url.endswith("/api/v1/stats/summary") else None
        ),
    )
    sign_in(page, site)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    events = page.get_by_role("article", name="Events, last hour")
    expect(events.locator(".card-value")).to_have_text("0")
    expect(page.get_by_role("article", name="Deliveries")).to_contain_text("No deliveries yet")
    alerts = page.get_by_label("Open alerts by severity")
    for severity in ("critical", "high", "medium", "low"):
        expect(alerts).to_contain_text(f"{severity}0")
    assert_accessible(page, "the overview")

    with site.api() as client:
        registered = client.post("/api/v1/event-types", json={"name": "order.created"})
        assert registered.status_code == 201, registered.text
        for n in range(3):
            published = client.post(
                "/api/v1/events", json={"type": "order.created", "data": {"n": n}}
            )
            assert published.status_code in (200, 201, 202), published.text
    # No reload: the stream says something changed, and the page reads the summary again.
    expect(events.locator(".card-value")).to_have_text("3")
    assert page.url.endswith("/overview")
    assert len(summaries) >= 2, summaries


def test_a_failed_summary_is_shown_with_its_title(page: Page, site: Site) -> None:
    refused = {
        "status": 500,
        "content_type": "application/problem+json",
        "body": '{"type":"urn:forecourt:problem:internal","title":"Internal error",'
        '"status":500,"detail":"Something failed on the server."}',
    }
    page.route("**/api/v1/stats/summary", lambda route: route.fulfill(**refused))
    sign_in(page, site)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Internal error")
    expect(alert).to_contain_text("Something failed on the server.")
    expect(page.get_by_role("article")).to_have_count(0)
    assert_accessible(page, "the overview, failed")


def test_alerts_arrive_live_and_are_acknowledged_and_resolved(page: Page, site: Site) -> None:
    sign_in(page, site)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    recent = page.get_by_role("region", name="Recent alerts")
    expect(recent.get_by_text("No alerts.")).to_be_visible()
    message = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'
    with site.api() as client:
        raised = client.post(
            "/api/v1/alerts",
            json={"type": "disk.full", "severity": "high", "message": message},
        )
        assert raised.status_code == 201, raised.text
    item = recent.get_by_role("listitem", name="high alert disk.full")
    expect(item).to_be_visible()
    expect(item.locator(".alert-message")).to_have_text(message)
    assert recent.locator("img, script").count() == 0
    expect(page.get_by_label("Open alerts by severity")).to_contain_text("high1")
    assert_accessible(page, "the overview with an alert")

    item.get_by_role("button", name="Acknowledge disk.full").click()
    expect(item).to_contain_text("acknowledged")
    expect(item.get_by_role("button", name="Acknowledge disk.full")).to_have_count(0)
    item.get_by_role("button", name="Resolve disk.full").click()
    expect(item).to_contain_text("resolved")
    expect(item.get_by_role("button")).to_have_count(0)
    expect(page.get_by_label("Open alerts by severity")).to_contain_text("high0")
    with site.api() as client:
        [alert] = client.get("/api/v1/alerts").json()["items"]
    assert alert["state"] == "resolved"
    assert page.evaluate("window.__xss") is None


def test_the_overview_says_it_is_loading_until_the_summary_arrives(page: Page, site: Site) -> None:
    held: list[Route] = []
    page.route("**/api/v1/stats/summary", lambda route: held.append(route))
    sign_in(page, site)
    expect(page.get_by_role("status").filter(has_text="Loading the summary")).to_be_visible()
    expect(page.get_by_role("article")).to_have_count(0)
    assert_accessible(page, "the overview, loading")
    assert held, "the summary request was not held"
    for route in held:
        route.continue_()
    page.unroute("**/api/v1/stats/summary")
    expect(page.get_by_role("article", name="Events, last hour")).to_be_visible()
    expect(page.get_by_text("Loading the summary")).to_have_count(0)
