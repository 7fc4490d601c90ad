"""The tenant table."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow

DEFAULT_TENANT_SLUG = "default"
# Lowercase letters, digits and '-', at most 63 (the slug column is 64 wide).
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set while the tenant is suspended: none of its keys or sessions is accepted.
    suspended_at: Mapped[datetime | None]
