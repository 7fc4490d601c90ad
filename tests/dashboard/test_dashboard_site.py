"""The dashboard's files as Forecourt serves them: paths, caching, security headers, and the
paths it must never take from the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from build import ENTRY_BUDGET_BYTES, entry_script, gzip_size, index_html

from conftest import Harness, problem
from forecourt.dashboard.site import Dashboard

CLIENT_PATHS = ["/", "/sign-in", "/overview", "/settings/api-keys", "/no/such/page"]


def assert_security_headers(headers: dict[str, str] | object) -> None:
    assert hasattr(headers, "get")
    csp = headers.get("content-security-policy")  # type: ignore[attr-defined]
    assert csp, "no Content-Security-Policy header"
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"].split()[0] == "'self'"
    assert "ws://testserver" in directives["connect-src"].split()
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers.get("x-content-type-options") == "nosniff"  # type: ignore[attr-defined]
    assert headers.get("referrer-policy") == "no-referrer"  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", CLIENT_PATHS)
async def test_app_paths_return_index_html_with_security_headers(
    harness: Harness, path: str
) -> None:
    response = await harness.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == index_html()
    assert response.headers["cache-control"] == "no-cache"
    assert_security_headers(response.headers)


async def test_static_files_are_immutable_and_confined(harness: Harness) -> None:
    entry = entry_script()
    response = await harness.client.get(f"/static/{entry.name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert_security_headers(response.headers)
    assert response.content == entry.read_bytes()
    for path in ("/static/nothing-here.js", "/static/..%2Findex.html", "/static/"):
        problem(await harness.client.get(path), 404, "not-found")


async def test_index_html_has_nothing_inline(harness: Harness) -> None:
    """What the policy would block anyway: no script body, no handler, no style attribute."""
    html = (await harness.client.get("/")).text
    assert "<script>" not in html.replace(" ", "")
    assert " on" not in html.lower().replace("<noscript", "")
    assert "style=" not in html
    assert "<style" not in html


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nothing",
        "/api",
        "/ws/x",
        "/metrics/x",
        "/healthz/x",
        "/docs/x",
        "/graphql",
        "/favicon.ico",
    ],
)
async def test_server_paths_are_never_taken(harness: Harness, path: str) -> None:
    response = await harness.client.get(path)
    assert response.status_code == 404, path
    assert response.headers["content-type"] == "application/problem+json"


async def test_api_documents_and_routes_still_answer(harness: Harness) -> None:
    assert (await harness.client.get("/healthz")).status_code == 200
    assert (await harness.client.get("/openapi.json")).json()["info"]["title"] == "Forecourt"
    assert (await harness.client.get("/docs")).status_code == 200
    # A write to an app path is no route: the router's own answer, not the app.
    response = await harness.client.post("/overview", json={})
    assert response.status_code in (404, 405)
    assert response.headers["content-type"] == "application/problem+json"
    # The dashboard's paths are not in the API's document.
    paths = (await harness.client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/static")]


async def test_without_a_build_the_server_says_how_to_build_it(
    harness: Harness, tmp_path: Path
) -> None:
    app = harness.client._transport.app  # type: ignore[attr-defined]
    site = app.router.default
    assert isinstance(site, Dashboard)
    site.dist = tmp_path / "missing"
    body = problem(await harness.client.get("/overview"), 503, "dashboard-not-built")
    assert "npm run build" in body["detail"]
    assert "make run" in body["detail"]
    # The API is unaffected.
    assert (await harness.client.get("/healthz")).status_code == 200


def test_initial_javascript_is_within_its_budget() -> None:
    size = gzip_size(entry_script())
    assert size <= ENTRY_BUDGET_BYTES, (
        f"the entry bundle is {size} bytes gzipped, over its budget of {ENTRY_BUDGET_BYTES}: "
        "lazy-load what the first screen does not need"
    )
