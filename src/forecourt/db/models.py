"""Every model, imported in one place so Alembic sees the whole schema."""

from __future__ import annotations

from forecourt.alerts.models import Alert, AlertRule
from forecourt.audit.models import AuditEntry
from forecourt.db.base import Base
from forecourt.events.models import Event, EventType
from forecourt.keys.models import ApiKey, ApiKeyUsage
from forecourt.metrics.models import MetricPoint, MetricRollup, MetricRollupWork, MetricSeries
from forecourt.plugins.models import (
    HostApproval,
    Plugin,
    PluginArchive,
    PluginExecution,
    PluginExportCursor,
    PluginGrant,
    PluginInstance,
    PluginQueueItem,
    PluginTenantState,
    PublisherKey,
)
from forecourt.tenants.models import Tenant
from forecourt.users.models import User, UserSession
from forecourt.webhooks.models import Attempt, Delivery, Endpoint

metadata = Base.metadata

__all__ = [
    "Alert",
    "AlertRule",
    "ApiKey",
    "ApiKeyUsage",
    "Attempt",
    "AuditEntry",
    "Delivery",
    "Endpoint",
    "Event",
    "EventType",
    "HostApproval",
    "MetricPoint",
    "MetricRollup",
    "MetricRollupWork",
    "MetricSeries",
    "Plugin",
    "PluginArchive",
    "PluginExecution",
    "PluginExportCursor",
    "PluginGrant",
    "PluginInstance",
    "PluginQueueItem",
    "PluginTenantState",
    "PublisherKey",
    "Tenant",
    "User",
    "UserSession",
    "metadata",
]
