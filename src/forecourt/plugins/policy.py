"""What this installation accepts from a package: resources within its caps, and a signature
from a publisher it trusts (or none, when it allows unsigned packages); and what each tenant
may use of what is installed: the plugins available to it (all tenants, or a list the operator
keeps), its own switch for each, and the host permissions the operator approved for it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, SQLColumnExpression, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.db.base import utcnow
from forecourt.errors import Forbidden, InvalidPackage
from forecourt.plugins.integrity import Trust, verify_package
from forecourt.plugins.manifest import check_resources
from forecourt.plugins.models import (
    HOST_PERMISSIONS,
    NOT_IN_USE,
    HostApproval,
    Plugin,
    PluginGrant,
    PluginTenantState,
)
from forecourt.plugins.package import PluginPackage
from forecourt.settings import Settings


def caps(settings: Settings) -> dict[str, float | None]:
    """The most a manifest's ``resources`` may ask for here."""
    return {
        "timeout_s": settings.plugin_max_timeout_s,
        "cpu_s": settings.plugin_max_cpu_s,
        "memory_mib": settings.plugin_max_memory_mib,
        "file_mib": settings.plugin_max_file_mib,
        "open_files": settings.plugin_max_open_files,
    }


def check_package(package: PluginPackage, settings: Settings, trusted_keys: Sequence[str]) -> Trust:
    """The installation's policies: resource caps (InvalidPackage), signatures (Untrusted)
    by one of ``trusted_keys`` (``publishers.trusted_keys``: the setting's and the stored)."""
    problems = check_resources(package.manifest, caps(settings))
    if problems:
        raise InvalidPackage(
            "The package asks for more than this installation allows", errors=problems
        )
    return verify_package(package, trusted_keys, allow_unsigned=settings.plugin_allow_unsigned)


# -- what each tenant may use -----------------------------------------------------------------


class HostPermissionNotApproved(Forbidden):
    """The plugin reaches the host; the operator has not approved that for this tenant."""

    slug = "host-permission-not-approved"
    title = "Host permission not approved"


def host_permissions(plugin: Plugin) -> list[str]:
    """The HOST_PERMISSIONS the version's manifest asks for."""
    permissions = plugin.manifest.get("permissions") or {}
    return [name for name in HOST_PERMISSIONS if permissions.get(name)]


async def approvals(session: AsyncSession, tenant_id: str) -> set[str]:
    """The host permissions the operator approved for ``tenant_id``."""
    rows = await session.scalars(
        select(HostApproval.permission).where(HostApproval.tenant_id == tenant_id)
    )
    return set(rows.all())


async def approve_host_permissions(
    session: AsyncSession, tenant_id: str, permissions: Iterable[str] = HOST_PERMISSIONS
) -> list[str]:
    """Approve ``permissions`` for the tenant (in the caller's transaction); those new."""
    held = await approvals(session, tenant_id)
    added = [p for p in dict.fromkeys(permissions) if p not in held]
    for permission in added:
        session.add(HostApproval(tenant_id=tenant_id, permission=permission, approved_at=utcnow()))
    await session.flush()
    return added


async def check_host_approved(session: AsyncSession, tenant_id: str, plugin: Plugin) -> None:
    """HostPermissionNotApproved unless every host permission of ``plugin`` is approved."""
    wanted = host_permissions(plugin)
    if not wanted:
        return
    held = await approvals(session, tenant_id)
    missing = [p for p in wanted if p not in held]
    if missing:
        raise HostPermissionNotApproved(
            f"{plugin.plugin_id} uses {', '.join(missing)}, which reach the host; the "
            "installation's operator must approve that for this tenant first.",
            permissions=missing,
        )


# A tenant in SQL: an id, or a column of the enclosing query (``PluginInstance.tenant_id``),
# which the clauses below correlate with, so one query checks each row for its own tenant.
TenantRef = str | SQLColumnExpression[str]


def visible_clause(tenant: TenantRef) -> ColumnElement[bool]:
    """Plugin rows the tenant may see and use: available to all, or granted to it."""
    granted = exists().where(
        PluginGrant.plugin_id == Plugin.plugin_id, PluginGrant.tenant_id == tenant
    )
    return or_(Plugin.available_to_all.is_(True), granted)


async def is_available(session: AsyncSession, tenant_id: str, plugin: Plugin) -> bool:
    if plugin.available_to_all:
        return True
    grant = await session.get(PluginGrant, (plugin.plugin_id, tenant_id))
    return grant is not None


async def grantees(session: AsyncSession, plugin_id: str) -> list[str]:
    """The tenant ids ``plugin_id`` is granted to (when not available to all)."""
    rows = await session.scalars(
        select(PluginGrant.tenant_id).where(PluginGrant.plugin_id == plugin_id)
    )
    return list(rows.all())


@dataclass(frozen=True)
class TenantState:
    """Whether a plugin runs for one tenant, and why not."""

    enabled: bool
    reason: str | None


def tenant_state(plugin: Plugin, own: PluginTenantState | None) -> TenantState:
    """The installation's switch, then the tenant's; a built-in without a tenant switch waits
    for the tenant's first instance."""
    if not plugin.enabled:
        return TenantState(False, plugin.disabled_reason)
    if own is not None:
        return TenantState(own.enabled, None if own.enabled else own.disabled_reason)
    if plugin.builtin:
        return TenantState(False, NOT_IN_USE)
    return TenantState(True, None)


async def own_states(
    session: AsyncSession, tenant_id: str, plugin_ids: Iterable[str]
) -> dict[str, PluginTenantState]:
    rows = await session.scalars(
        select(PluginTenantState).where(
            PluginTenantState.tenant_id == tenant_id,
            PluginTenantState.plugin_id.in_(list(plugin_ids)),
        )
    )
    return {row.plugin_id: row for row in rows}


def enabled_clause(tenant: TenantRef) -> ColumnElement[bool]:
    """SQL: the plugin row is enabled for ``tenant`` (see tenant_state)."""
    own = (
        select(PluginTenantState.enabled)
        .where(
            PluginTenantState.tenant_id == tenant,
            PluginTenantState.plugin_id == Plugin.plugin_id,
        )
        .scalar_subquery()
    )
    return and_(
        Plugin.enabled.is_(True),
        or_(own.is_(True), and_(own.is_(None), Plugin.builtin.is_(False))),
    )


def usable_clause(tenant: TenantRef) -> ColumnElement[bool]:
    """SQL: the plugin row may run for ``tenant``: available to it and enabled for it. Event
    routing and the scheduler pass ``PluginInstance.tenant_id``, so whatever turned a tenant's
    instances on or off, nothing runs for a tenant its plugin is not usable for."""
    return and_(visible_clause(tenant), enabled_clause(tenant))
