"""Who may call a route, checked before the route reads its body.

FastAPI parses a route's JSON body before it solves the route's dependencies, so a body that
is not JSON would answer 400 or 422 to a caller who is not even authenticated, and the server
would parse whatever an anonymous caller sends. Every router is built with ``GuardedRoute``:
a route that needs a caller first makes the check its ``require`` dependency makes (401,
suspended tenant, CSRF, 403), before anything of the request is read. The dependency still
runs and gives the route its principal; the check is a few set lookups.

The route reads a JSON body through ``JsonRequest``: the value the standard library would
give, parsed by orjson where that is the same (``codec.loads_like_stdlib``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from forecourt import codec
from forecourt.http.deps import REQUIRED_SCOPE_ATTR, check_scope, current_principal

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def caller_requirement(dependant: Dependant) -> tuple[bool, str | None]:
    """(needs a caller, the scope it must hold) from a route's dependency tree."""
    needs, scope = False, None
    for dependency in dependant.dependencies:
        if dependency.call is current_principal:
            needs = True
        required = getattr(dependency.call, REQUIRED_SCOPE_ATTR, None)
        if required is not None:
            needs, scope = True, required
        inner_needs, inner_scope = caller_requirement(dependency)
        needs = needs or inner_needs
        scope = scope or inner_scope
    return needs, scope


class JsonRequest(Request):
    """A request whose JSON body is parsed by ``codec.loads_like_stdlib``."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = codec.loads_like_stdlib(await self.body())
        return self._json


class GuardedRoute(APIRoute):
    """An APIRoute that refuses a caller without the route's scope before reading the body."""

    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        needs, scope = caller_requirement(self.dependant)

        async def guarded(request: Request) -> Response:
            if needs:
                principal = current_principal(request)
                if scope is not None:
                    check_scope(principal, scope)
            return await handler(JsonRequest(request.scope, request.receive))

        return guarded
