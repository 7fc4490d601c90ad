"""REST: /api/v1/tenants, the operator's (``system:admin``) alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, status
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.plugins import policy
from forecourt.principal import Principal
from forecourt.schemas import Page
from forecourt.scopes import SYSTEM_ADMIN
from forecourt.tenants.models import Tenant
from forecourt.tenants.schemas import HostApprovalsOut, TenantCreate, TenantCreated, TenantOut

if TYPE_CHECKING:
    from forecourt.core import Forecourt

Operator = Annotated[Principal, Depends(require(SYSTEM_ADMIN))]

router = APIRouter(route_class=GuardedRoute, prefix="/api/v1/tenants", tags=["tenants"])


def tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        suspended=tenant.suspended_at is not None,
        suspended_at=tenant.suspended_at,
        created_at=tenant.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantCreated)
async def create_tenant(
    body: TenantCreate, actor: Operator, fc: ForecourtDep, session: DbSession
) -> TenantCreated:
    """A new tenant and its first admin key (in the response, this once)."""
    tenant, key, raw = await fc.tenants(session).create(actor, body.slug, body.name)
    return TenantCreated(**tenant_out(tenant).model_dump(), admin_key_id=key.id, admin_key=raw)


@router.get("", response_model=Page[TenantOut])
async def list_tenants(
    actor: Operator, fc: ForecourtDep, session: DbSession, page: Paging
) -> Page[TenantOut]:
    """Every tenant of the installation, newest first."""
    rows, cursor = await fc.tenants(session).page(page.cursor, page.limit)
    return Page[TenantOut](items=[tenant_out(t) for t in rows], next_cursor=cursor)


@router.get("/{tenant}", response_model=TenantOut)
async def get_tenant(
    tenant: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> TenantOut:
    """By id or slug."""
    return tenant_out(await fc.tenants(session).get(tenant))


@router.post("/{tenant}/suspend", response_model=TenantOut)
async def suspend_tenant(
    tenant: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> TenantOut:
    """Every key and session of the tenant stops at once, on every node (403 "tenant
    suspended"). The operator's own tenant cannot be suspended (409)."""
    return tenant_out(await fc.tenants(session).suspend(actor, tenant))


@router.post("/{tenant}/resume", response_model=TenantOut)
async def resume_tenant(
    tenant: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> TenantOut:
    return tenant_out(await fc.tenants(session).resume(actor, tenant))


HostPermission = Annotated[
    Literal["host_metrics", "unix_sockets"],
    Path(description="A permission that reaches the host."),
]


async def _approvals(fc: Forecourt, session: AsyncSession, ref: str) -> HostApprovalsOut:
    tenant = await fc.tenants(session).get(ref)
    held = await policy.approvals(session, tenant.id)
    return HostApprovalsOut(tenant=tenant.slug, approved=sorted(held))


@router.get("/{tenant}/host-permissions", response_model=HostApprovalsOut)
async def host_permissions(
    tenant: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> HostApprovalsOut:
    """The host permissions (host_metrics, unix_sockets) the tenant's plugins may use."""
    return await _approvals(fc, session, tenant)


@router.put("/{tenant}/host-permissions/{permission}", response_model=HostApprovalsOut)
async def approve_host_permission(
    tenant: str, permission: HostPermission, actor: Operator, fc: ForecourtDep, session: DbSession
) -> HostApprovalsOut:
    """Approve a host permission for the tenant: its instances of plugins that use it may be
    created and run."""
    found = await fc.tenants(session).get(tenant)
    approved = await fc.plugins(session).set_host_approval(actor, found, permission, True)
    return HostApprovalsOut(tenant=found.slug, approved=approved)


@router.delete("/{tenant}/host-permissions/{permission}", response_model=HostApprovalsOut)
async def revoke_host_permission(
    tenant: str, permission: HostPermission, actor: Operator, fc: ForecourtDep, session: DbSession
) -> HostApprovalsOut:
    """Revoke it: the tenant's instances of plugins that use it are disabled."""
    found = await fc.tenants(session).get(tenant)
    approved = await fc.plugins(session).set_host_approval(actor, found, permission, False)
    return HostApprovalsOut(tenant=found.slug, approved=approved)


@router.delete("/{tenant}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(tenant: str, actor: Operator, fc: ForecourtDep, session: DbSession) -> None:
    """Delete the tenant and everything it owns. The operator's own tenant cannot be (409)."""
    await fc.tenants(session).delete(actor, tenant)
