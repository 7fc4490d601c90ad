"""Debian's Chromium driven by Playwright, a served Forecourt to point it at, and axe-core.

Playwright cannot download its own browsers here: it drives /usr/bin/chromium (installed by
scripts/install-test-tools.sh, which `make test` runs). Without it the browser tests fail,
naming what to install; they are never skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 320, "height": 640}
PASSWORD = "correct horse battery staple"


def require_chromium() -> str:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard's browser tests need Debian's chromium "
            "package (scripts/install-test-tools.sh installs it as root: apt-get install -y "
            "chromium)",
            pytrace=False,
        )
    return str(CHROMIUM)


def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(
            f"{AXE} is missing: install the dashboard's packages (`make web`, or "
            "`cd web && npm ci`)",
            pytrace=False,
        )
    return AXE.read_text()


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Through the DevTools protocol, so the page's Content-Security-Policy does not apply.
        page.evaluate(axe_source())
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def assert_accessible(page: Page, where: str) -> None:
    """No serious or critical axe violation, at desktop width and at 320 px, and no
    horizontal scrolling of the page at either."""
    for viewport in (DESKTOP, NARROW):
        page.set_viewport_size(viewport)
        found = serious_violations(page)
        assert not found, f"{where} at {viewport['width']} px: {json.dumps(found, indent=1)}"
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{where} scrolls sideways by {overflow} px at {viewport['width']}"
    page.set_viewport_size(DESKTOP)


@dataclass
class Site:
    """A served Forecourt, the owner key, and a user who signs in with a password."""

    url: str
    owner_key: str
    email: str
    password: str

    def api(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.owner_key}"},
            timeout=30,
        )


def create_user(url: str, owner_key: str, email: str, role: str = "owner") -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(
            "/api/v1/users",
            json={"email": email, "password": PASSWORD, "role": role, "name": "Dana"},
            headers={"Authorization": f"Bearer {owner_key}"},
        )
        assert response.status_code == 201, response.text
