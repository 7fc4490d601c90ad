"""Tenants: look up or create by slug; the operator's management of them (create with a first
admin key, list, suspend, resume, delete); and the set of suspended tenants every node keeps.

A suspension takes effect on every node at once: the tenant's row is marked, then the change
is broadcast (SUSPENSION_CHANNEL) to every node's :class:`Suspensions`, which the HTTP layer
checks wherever it resolves the caller. Each node also reloads the set from the database
every RELOAD_INTERVAL_S, so a lost broadcast heals.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forecourt import principal as principals
from forecourt.audit import service as audit
from forecourt.broadcast import Broadcast
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, Forbidden, InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.keys.cache import INVALIDATE_CHANNEL
from forecourt.keys.models import ApiKey
from forecourt.keys.schemas import KeyCreate
from forecourt.pagination import next_cursor, paginate
from forecourt.principal import Principal
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, SLUG_RE, Tenant

if TYPE_CHECKING:
    from forecourt.keys.service import KeyService

log = logging.getLogger("forecourt.tenants")

SUSPENSION_CHANNEL = "tenants.suspension"
RELOAD_INTERVAL_S = 30.0
FIRST_KEY_NAME = "admin"


class TenantSuspended(Forbidden):
    """This tenant is suspended: none of its keys or sessions is accepted."""

    slug = "tenant-suspended"
    title = "Tenant suspended"


async def get_by_slug(session: AsyncSession, slug: str) -> Tenant:
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise NotFound(f"No tenant named {slug!r}.")
    return tenant


async def ensure(session: AsyncSession, slug: str, name: str | None = None) -> Tenant:
    """The tenant with ``slug``, created if it does not exist yet."""
    if not SLUG_RE.match(slug):
        raise InvalidInput("Tenant slugs are lowercase letters, digits and '-'.", field="tenant")
    tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), slug=slug, name=name or slug)
        session.add(tenant)
        await session.flush()
    return tenant


async def find(session: AsyncSession, ref: str) -> Tenant | None:
    """The tenant whose id or slug is ``ref``."""
    return await session.scalar(select(Tenant).where((Tenant.id == ref) | (Tenant.slug == ref)))


async def all_ids(session: AsyncSession) -> list[str]:
    return list((await session.scalars(select(Tenant.id))).all())


def summary(tenant: Tenant) -> dict[str, Any]:
    """What the audit log keeps of a tenant."""
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "suspended_at": tenant.suspended_at.isoformat() if tenant.suspended_at else None,
    }


class Suspensions:
    """The ids of the suspended tenants, as this node knows them."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._ids

    def on_message(self, message: str) -> None:
        """A broadcast: ``suspend <tenant id>`` or ``resume <tenant id>``."""
        action, _, tenant_id = message.partition(" ")
        if action == "suspend":
            self._ids.add(tenant_id)
        elif action == "resume":
            self._ids.discard(tenant_id)

    async def reload(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        async with sessionmaker() as session:
            rows = await session.scalars(select(Tenant.id).where(Tenant.suspended_at.is_not(None)))
            self._ids = set(rows.all())

    async def run(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Reload every RELOAD_INTERVAL_S (a safety net under the broadcast)."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                await self.reload(sessionmaker)
            except Exception:  # the database may be away for a moment; try again later
                log.warning("could not reload the suspended tenants", exc_info=True)


class TenantService:
    """The operator's management of tenants. Every method expects a ``system:admin`` caller
    (the routes and the CLI check it)."""

    def __init__(self, session: AsyncSession, keys: KeyService, broadcast: Broadcast) -> None:
        self.session = session
        self.keys = keys
        self.broadcast = broadcast

    async def create(self, actor: Principal, slug: str, name: str) -> tuple[Tenant, ApiKey, str]:
        """A new tenant and its first admin key (the secret returned this once)."""
        if not SLUG_RE.match(slug):
            raise InvalidInput("Tenant slugs are lowercase letters, digits and '-'.", field="slug")
        if await self.session.scalar(select(Tenant.id).where(Tenant.slug == slug)):
            raise Conflict(f"A tenant named {slug!r} exists.")
        tenant = Tenant(id=new_id("ten"), slug=slug, name=name, created_at=utcnow())
        self.session.add(tenant)
        try:
            await self.session.flush()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict(f"A tenant named {slug!r} exists.") from None
        audit.record(
            self.session, actor, "tenant.created", "tenant", tenant.id, after=summary(tenant)
        )
        audit.record_operator(
            self.session, "tenant.created", "tenant", tenant.id, [tenant.id], after=summary(tenant)
        )
        # The key service commits the tenant, the audit entries and the key together.
        key, raw = await self.keys.create(
            principals.system(tenant.id),
            KeyCreate(name=FIRST_KEY_NAME, description="The tenant's first key.", scopes=["admin"]),
            announce=False,
        )
        return tenant, key, raw

    async def page(self, cursor: str | None, limit: int) -> tuple[list[Tenant], str | None]:
        rows = (
            await self.session.scalars(paginate(select(Tenant), Tenant.id, cursor, limit))
        ).all()
        return next_cursor(rows, limit)

    async def get(self, ref: str) -> Tenant:
        """By id or slug."""
        tenant = await find(self.session, ref)
        if tenant is None:
            raise NotFound(f"No tenant {ref!r}.")
        return tenant

    async def suspend(self, actor: Principal, ref: str) -> Tenant:
        tenant = await self._changeable(actor, ref, "suspended")
        if tenant.suspended_at is None:
            before = summary(tenant)
            tenant.suspended_at = utcnow()
            self._audit(actor, "tenant.suspended", tenant, before)
            await self.session.commit()
        await self.broadcast.publish(SUSPENSION_CHANNEL, f"suspend {tenant.id}")
        return tenant

    async def resume(self, actor: Principal, ref: str) -> Tenant:
        tenant = await self.get(ref)
        if tenant.suspended_at is not None:
            before = summary(tenant)
            tenant.suspended_at = None
            self._audit(actor, "tenant.resumed", tenant, before)
            await self.session.commit()
        await self.broadcast.publish(SUSPENSION_CHANNEL, f"resume {tenant.id}")
        return tenant

    async def delete(self, actor: Principal, ref: str) -> None:
        """Delete the tenant and everything it owns (every foreign key to it cascades)."""
        tenant = await self._changeable(actor, ref, "deleted")
        tenant_id = tenant.id
        key_ids = list(
            await self.session.scalars(select(ApiKey.id).where(ApiKey.tenant_id == tenant_id))
        )
        # Refused everywhere first, so nothing it holds is used while it goes.
        await self.broadcast.publish(SUSPENSION_CHANNEL, f"suspend {tenant_id}")
        await self.session.execute(
            update(Tenant).where(Tenant.id == tenant_id).values(suspended_at=utcnow())
        )
        audit.record(
            self.session, actor, "tenant.deleted", "tenant", tenant_id, before=summary(tenant)
        )
        await self.session.execute(delete(Tenant).where(Tenant.id == tenant_id))
        await self.session.commit()
        for key_id in key_ids:
            await self.broadcast.publish(INVALIDATE_CHANNEL, key_id)

    async def _changeable(self, actor: Principal, ref: str, what: str) -> Tenant:
        tenant = await self.get(ref)
        if tenant.id == actor.tenant_id or tenant.slug == DEFAULT_TENANT_SLUG:
            raise Conflict(f"The operator's own tenant cannot be {what}.")
        return tenant

    def _audit(self, actor: Principal, action: str, tenant: Tenant, before: dict[str, Any]) -> None:
        after = summary(tenant)
        audit.record(self.session, actor, action, "tenant", tenant.id, before=before, after=after)
        audit.record_operator(
            self.session, action, "tenant", tenant.id, [tenant.id], before=before, after=after
        )
