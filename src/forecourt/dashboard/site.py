"""The dashboard's files: ``/static/<hashed file>``, and index.html for the app's own paths.

The app is built by ``npm run build`` in ``web/`` into :data:`DIST_DIR` (never committed).
:class:`Dashboard` is the router's fallback: it sees only what no API route matched, so it
cannot shadow a route, change a 405 or a trailing-slash redirect. A GET of any other path
returns index.html (the app routes ``/``, ``/sign-in``, ``/settings/api-keys``, ... in the
browser and shows its own "not found"), except under the server's own prefixes, which keep
their 404 problem. Without a build the server still starts, and those paths answer 503 with
how to build it.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from forecourt.dashboard.headers import PAGE_CACHE, STATIC_CACHE, security_headers
from forecourt.http.problems import problem

DIST_DIR = Path(__file__).parent / "dist"
STATIC_PREFIX = "/static/"
# Paths that belong to the server, never to the app (a prefix matches itself and what is
# under it: "/docs" and "/docs/...", not "/docsearch").
RESERVED = ("/api", "/ws", "/graphql", "/metrics", "/healthz", "/readyz", "/docs", "/redoc")
RESERVED_FILES = ("/openapi.json", "/favicon.ico")
# The built files are flat and content-hashed: a name, never a path.
_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NOT_BUILT = (
    "The dashboard has not been built. Run `make run` (it builds it), or build it by hand: "
    "`cd web && npm ci && npm run build`."
)


def reserved(path: str) -> bool:
    """Whether ``path`` is the server's (the API, streams, documents), never the app's."""
    if path in RESERVED_FILES:
        return True
    return any(path == prefix or path.startswith(prefix + "/") for prefix in RESERVED)


class Dashboard:
    """ASGI fallback serving the build in ``dist``; anything it does not serve goes to
    ``fallback`` (the router's 404). The build is looked up on each request, so one made
    while the server runs is served without a restart."""

    def __init__(self, fallback: ASGIApp, dist: Path = DIST_DIR) -> None:
        self.fallback = fallback
        self.dist = dist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or reserved(path):
            await self.fallback(scope, receive, send)
            return
        headers = security_headers(Headers(scope=scope).get("host"))
        response: Response | None
        if path.startswith(STATIC_PREFIX):
            response = self._static(path.removeprefix(STATIC_PREFIX), headers)
        else:
            response = self._page(path, headers)
        if response is None:
            response = problem(
                404, "Not found", f"Nothing at {path}.", "not-found", instance=path, headers=headers
            )
        await response(scope, receive, send)

    def _static(self, name: str, headers: dict[str, str]) -> Response | None:
        file = self.dist / "static" / name
        if not _STATIC_NAME.match(name) or not file.is_file():
            return None
        return FileResponse(file, headers={**headers, "Cache-Control": STATIC_CACHE})

    def _page(self, path: str, headers: dict[str, str]) -> Response:
        index = self.dist / "index.html"
        if not index.is_file():
            return problem(
                503,
                "Dashboard not built",
                NOT_BUILT,
                "dashboard-not-built",
                instance=path,
                headers={**headers, "Cache-Control": "no-store"},
            )
        return FileResponse(
            index, media_type="text/html", headers={**headers, "Cache-Control": PAGE_CACHE}
        )
