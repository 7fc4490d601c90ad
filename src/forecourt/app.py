"""create_app(settings): the one place routers, middleware and lifespan meet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from forecourt import __version__
from forecourt.audit.routes import router as audit_router
from forecourt.core import Forecourt
from forecourt.events.routes import routers as event_routers
from forecourt.http import problems
from forecourt.http.health import router as health_router
from forecourt.http.middleware.access import AccessMiddleware
from forecourt.http.middleware.body_limit import BodyLimitMiddleware
from forecourt.http.middleware.request_id import RequestIdMiddleware
from forecourt.keys.routes import router as keys_router
from forecourt.settings import Settings
from forecourt.users.routes import auth as auth_router
from forecourt.users.routes import users as users_router
from forecourt.webhooks.routes import deliveries as deliveries_router
from forecourt.webhooks.routes import webhooks as webhooks_router

DESCRIPTION = (
    "API keys with scopes and rate limits, an audit log of every change, and the sessions "
    "behind the dashboard. Authenticate with `Authorization: Bearer <api key>`."
)


def create_app(
    settings: Settings | None = None,
    *,
    forecourt: Forecourt | None = None,
    run_workers: bool = True,
) -> FastAPI:
    """The ASGI app. Its lifespan starts and stops the Forecourt instance and its workers."""
    fc = forecourt or Forecourt(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await fc.start(run_workers=run_workers)
        try:
            yield
        finally:
            await fc.stop()

    app = FastAPI(
        title="Forecourt",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.forecourt = fc
    problems.install(app)
    for router in (
        health_router,
        keys_router,
        users_router,
        auth_router,
        audit_router,
        *event_routers,
    ):
        app.include_router(router)
    for router in (webhooks_router, deliveries_router):
        app.include_router(router)

    # Outermost last: request id -> body limit -> access (auth + rate limit) -> routes.
    app.add_middleware(
        AccessMiddleware,
        authenticator=fc.authenticator,
        resolve_session=fc.resolve_session,
        limiter=fc.limiter,
        policy=fc.policy,
        usage=fc.usage,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=fc.settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
