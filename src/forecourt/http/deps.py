"""Annotated dependencies for routers: the database session, the caller, scope checks."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.errors import CsrfFailed, Forbidden, Unauthenticated
from forecourt.pagination import DEFAULT_LIMIT, MAX_LIMIT
from forecourt.principal import Principal
from forecourt.tenants.service import TenantSuspended

if TYPE_CHECKING:
    from forecourt.core import Forecourt

# The attribute of a ``require`` dependency naming its scope (read by http/guard.py).
REQUIRED_SCOPE_ATTR = "required_scope"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


async def get_forecourt(request: Request) -> Forecourt:
    # async: FastAPI would run a plain function in its thread pool on every request.
    fc: Forecourt = request.app.state.forecourt
    return fc


ForecourtDep = Annotated["Forecourt", Depends(get_forecourt)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    fc: Forecourt = request.app.state.forecourt
    async with fc.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


def current_principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthenticated(headers={"WWW-Authenticate": 'Bearer realm="forecourt"'})
    fc: Forecourt = request.app.state.forecourt
    if principal.tenant_id in fc.suspensions:
        raise TenantSuspended()
    if principal.via_cookie and request.method not in SAFE_METHODS:
        expected: str = getattr(request.state, "csrf_token", "") or ""
        given = request.headers.get(CSRF_HEADER, "")
        if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
            raise CsrfFailed()
    return principal


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that returns the caller if it holds ``scope``: 401 / 403 otherwise."""

    async def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        check_scope(principal, scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_').replace('-', '_')}"
    # Read by http/guard.py, which checks the caller before the route reads its body.
    setattr(dependency, REQUIRED_SCOPE_ATTR, scope)
    return dependency


def check_scope(principal: Principal, scope: str) -> None:
    """Forbidden unless ``principal`` holds ``scope``."""
    if scope not in principal.scopes:
        raise Forbidden(f"This needs the {scope!r} scope.", required_scope=scope)


class PageParams:
    def __init__(
        self,
        cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> None:
        self.cursor = cursor
        self.limit = limit


Paging = Annotated[PageParams, Depends()]
