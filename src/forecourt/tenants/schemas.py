"""Request and response bodies of /api/v1/tenants."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from forecourt.schemas import StrictModel
from forecourt.tenants.models import SLUG_RE


class TenantCreate(StrictModel):
    slug: str = Field(
        min_length=1,
        max_length=63,
        pattern=SLUG_RE.pattern,
        description="Lowercase letters, digits and '-'; unique.",
    )
    name: str = Field(min_length=1, max_length=200)


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    slug: str
    name: str
    suspended: bool
    suspended_at: datetime | None
    created_at: datetime


class TenantCreated(TenantOut):
    admin_key_id: str
    admin_key: str = Field(description="The tenant's first admin key. Shown this once.")


class HostApprovalsOut(BaseModel):
    tenant: str
    approved: list[str] = Field(description="Host permissions the operator approved.")
