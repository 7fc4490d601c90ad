"""REST: /api/v1/stats/summary, /api/v1/plugins/categories and
/api/v1/plugins/{plugin_id}/status, thin routes on the overview service and its cache.

``plugins`` is included before the plugin router, whose ``/{plugin_id}`` would otherwise
take ``/categories``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from forecourt.http.deps import DbSession, ForecourtDep, require
from forecourt.http.guard import GuardedRoute
from forecourt.overview import service
from forecourt.overview.schemas import CategoriesOut, PluginStatusOut, SummaryOut
from forecourt.principal import Principal

PluginsRead = Annotated[Principal, Depends(require("plugins:read"))]
StatsRead = Annotated[Principal, Depends(require("stats:read"))]

plugins = APIRouter(route_class=GuardedRoute, prefix="/api/v1/plugins", tags=["plugins"])
stats = APIRouter(route_class=GuardedRoute, prefix="/api/v1/stats", tags=["stats"])


@plugins.get("/categories", response_model=CategoriesOut)
async def plugin_categories(actor: PluginsRead, session: DbSession) -> dict[str, Any]:
    """Categories of the plugins your tenant may use, each with how many plugins are in it
    (by each plugin's latest version); plugins without one are counted under ``null``."""
    return {"items": await service.categories(session, actor)}


@plugins.get("/{plugin_id}/status", response_model=PluginStatusOut)
async def plugin_status(
    plugin_id: str, actor: PluginsRead, fc: ForecourtDep, session: DbSession
) -> dict[str, Any]:
    """The health of each of your tenant's instances of the plugin: last run, last success,
    errors since that success and in the last hour, next scheduled run. Cached for
    ``FORECOURT_OVERVIEW_CACHE_TTL_S``; a run, on any node, shows on the next read."""
    await fc.plugins(session).get(plugin_id, actor)  # 404 unless the tenant may see it

    async def compute() -> list[dict[str, Any]]:
        return await service.plugin_status(session, actor.tenant_id, plugin_id)

    key = f"status:{plugin_id}"
    found = await fc.overview_cache.get_or_compute(actor.tenant_id, key, compute)
    return {"plugin_id": plugin_id, "instances": found}


@stats.get("/summary", response_model=SummaryOut)
async def summary(actor: StatsRead, fc: ForecourtDep, session: DbSession) -> dict[str, Any]:
    """Your tenant at a glance: plugins installed and enabled, instances, metric series and
    points stored, plugin runs and events of the last hour, deliveries by status, unresolved
    alerts by severity. Cached for ``FORECOURT_OVERVIEW_CACHE_TTL_S``; an event published, a
    run, a delivery attempt or an alert change, on any node, shows on the next read."""

    async def compute() -> dict[str, Any]:
        return await service.summary(session, actor.tenant_id)

    found: dict[str, Any] = await fc.overview_cache.get_or_compute(
        actor.tenant_id, "summary", compute
    )
    return found
