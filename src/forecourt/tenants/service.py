"""Tenants: look up or create by slug."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.errors import InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.tenants.models import Tenant

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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
