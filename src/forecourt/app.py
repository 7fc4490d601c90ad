"""create_app(settings): the one place routers, middleware and lifespan meet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from forecourt import __version__, runtime
from forecourt.alerts import routes as alert_routes
from forecourt.audit.routes import router as audit_router
from forecourt.core import Forecourt
from forecourt.dashboard.site import Dashboard
from forecourt.events.routes import routers as event_routers
from forecourt.http import openapi, problems
from forecourt.http.client_ip import parse_networks
from forecourt.http.health import router as health_router
from forecourt.http.middleware.access import AccessMiddleware
from forecourt.http.middleware.body_limit import BodyLimitMiddleware
from forecourt.http.middleware.metrics import MetricsMiddleware
from forecourt.http.middleware.request_id import RequestIdMiddleware
from forecourt.keys.routes import router as keys_router
from forecourt.metrics import routes as metric_routes
from forecourt.observability import routes as observability_routes
from forecourt.overview import routes as overview_routes
from forecourt.plugins import routes as plugin_routes
from forecourt.realtime import sse, ws
from forecourt.settings import Settings
from forecourt.tenants.routes import router as tenants_router
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
        runtime.settle()
        try:
            yield
        finally:
            runtime.unsettle()
            await fc.stop()

    app = FastAPI(
        title="Forecourt",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.forecourt = fc
    problems.install(app)
    openapi.install(app)
    # Routes are matched in this order, one router after the other: the hot path (publishing)
    # first, then what workers and dashboards poll, then the rest.
    for router in (
        *event_routers,
        webhooks_router,
        deliveries_router,
        health_router,
        keys_router,
        users_router,
        auth_router,
        audit_router,
        overview_routes.plugins,  # before /plugins/{plugin_id}
        plugin_routes.plugins,
        plugin_routes.instances,
        metric_routes.router,
        metric_routes.plugin_router,
        tenants_router,
        sse.router,
        ws.router,
        alert_routes.alerts,
        alert_routes.rules,
        observability_routes.scrape,
        observability_routes.stats,
        overview_routes.stats,
        observability_routes.system,
    ):
        app.include_router(router)
    # The dashboard answers only what no route matched (see dashboard/site.py).
    app.router.default = Dashboard(app.router.default)

    # Outermost last: request id -> metrics -> body limit -> access (auth + rate limit) ->
    # routes.
    app.add_middleware(
        AccessMiddleware,
        authenticator=fc.authenticator,
        resolve_session=fc.resolve_session,
        limiter=fc.limiter,
        policy=fc.policy,
        usage=fc.usage,
        trusted_proxies=parse_networks(fc.settings.trusted_proxies),
    )
    upload_cap = fc.settings.plugin_max_package_bytes + plugin_routes.MULTIPART_ALLOWANCE_BYTES
    app.add_middleware(
        _BodyLimits,
        max_bytes=fc.settings.max_body_bytes,
        upload_path=plugin_routes.UPLOAD_PATH,
        upload_max_bytes=max(upload_cap, fc.settings.max_body_bytes),
    )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


class _BodyLimits:
    """The body cap, except for plugin uploads, which may be as large as a package may be."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, upload_path: str, upload_max_bytes: int
    ) -> None:
        self.default = BodyLimitMiddleware(app, max_bytes)
        self.upload = BodyLimitMiddleware(app, upload_max_bytes)
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope.get("method") == "POST" and scope.get("path") == self.upload_path
        await (self.upload if upload else self.default)(scope, receive, send)
