"""Security headers of every dashboard response.

The policy is sent as a header (never a ``<meta>``) and allows nothing inline: the built app
loads one script and one style sheet from ``/static``, and renders no ``style`` attribute.
"""

from __future__ import annotations

import re

# Host names and ports a request may name for the WebSocket source; anything else falls back
# to 'self' alone rather than echoing an odd Host header into the policy.
_HOST = re.compile(r"([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")

STATIC_CACHE = "public, max-age=31536000, immutable"
# index.html names the hashed files of the current build: always check for a newer one.
PAGE_CACHE = "no-cache"


def content_security_policy(host: str | None) -> str:
    """The policy for a page served to ``host`` (the request's Host header)."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"connect-src {connect}",
            "img-src 'self' data:",
            "font-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def security_headers(host: str | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
