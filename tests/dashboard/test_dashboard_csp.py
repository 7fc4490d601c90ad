"""The Content-Security-Policy as Chromium enforces it on a dashboard page."""

from __future__ import annotations

from browser import Site
from fixtures import backend_sqlite_fixture, browser_fixture, site_fixture  # noqa: F401
from playwright.sync_api import Browser


def test_the_browser_refuses_inline_script_and_style_on_the_page(
    browser: Browser, site: Site
) -> None:
    context = browser.new_context(base_url=site.url)
    page = context.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    try:
        response = page.goto("/sign-in")
        assert response is not None
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.get_by_role("heading", name="Sign in").wait_for()
        # What an injection would try: an inline script, a handler attribute, a style attribute.
        # (eval cannot be tried from here: code evaluated through DevTools is exempt.)
        page.evaluate(
            """() => {
                const script = document.createElement('script');
                script.textContent = 'window.__inline = 1';
                document.body.append(script);
                const img = document.createElement('img');
                img.setAttribute('onerror', 'window.__handler = 1');
                img.src = 'data:,';
                document.body.append(img);
                const styled = document.createElement('p');
                styled.id = 'styled';
                styled.setAttribute('style', 'color: rgb(1, 2, 3)');
                document.body.append(styled);
            }"""
        )
        page.wait_for_function("document.getElementById('styled') !== null")
        assert page.evaluate("window.__inline") is None
        color = page.evaluate("getComputedStyle(document.getElementById('styled')).color")
        assert color != "rgb(1, 2, 3)"
        page.wait_for_function("document.querySelector('img[onerror]').complete")
        assert page.evaluate("window.__handler") is None
        assert refused, "Chromium reported no refusal by the policy"
    finally:
        context.close()
