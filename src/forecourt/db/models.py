"""Every model, imported in one place so Alembic sees the whole schema."""

from __future__ import annotations

from forecourt.audit.models import AuditEntry
from forecourt.db.base import Base
from forecourt.keys.models import ApiKey, ApiKeyUsage
from forecourt.tenants.models import Tenant
from forecourt.users.models import User, UserSession

metadata = Base.metadata

__all__ = ["ApiKey", "ApiKeyUsage", "AuditEntry", "Tenant", "User", "UserSession", "metadata"]
