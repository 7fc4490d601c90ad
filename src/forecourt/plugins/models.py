"""Installed plugin versions and their packages, per-tenant instances, the record of every
run, the queue of events waiting for hook and alert instances, and the publisher keys the
installation trusts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from forecourt.db.base import ID_LENGTH, Base, utcnow
from forecourt.events.models import TYPE_LENGTH

PLUGIN_ID_LENGTH = 100  # the manifest schema's limit
VERSION_LENGTH = 64
STATUS_LENGTH = 16
PUBLIC_KEY_LENGTH = 100  # "ed25519:" and 44 characters of base64
FINGERPRINT_LENGTH = 64  # "SHA256:" and 43 characters of base64

# Plugin version status: its files read as a valid package (``ready``), or its development
# folder stopped being one (``invalid``: the last good files keep running; see status_detail).
READY = "ready"
INVALID = "invalid"
# Why a plugin is disabled for a tenant: a built-in waits for the tenant's first instance, or
# the tenant's admin said so.
NOT_IN_USE = "not in use yet"

# Manifest permissions that reach the host itself: a tenant uses them only once the operator
# approved them for that tenant.
HOST_PERMISSIONS = ("host_metrics", "unix_sockets")

# The queue's two ways of being due, as literal SQL (see webhooks.models for why literal).
QUEUE_WAITING_SQL = "lease_owner IS NULL"
QUEUE_LEASED_SQL = "lease_owner IS NOT NULL"

# Plugin types that run when events they subscribe to are published.
EVENT_PLUGIN_TYPES = ("hook", "alert")


class Plugin(Base):
    """One installed version of a plugin (several versions of one id live side by side)."""

    __tablename__ = "plugins"
    __table_args__ = (UniqueConstraint("plugin_id", "version"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LENGTH))
    version: Mapped[str] = mapped_column(String(VERSION_LENGTH))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(32))
    runtime: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(64))
    # The manifest as parsed; event_types repeats permissions.events for routing queries.
    manifest: Mapped[dict[str, Any]]
    event_types: Mapped[list[str]]
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    signed: Mapped[bool]
    publisher: Mapped[str | None] = mapped_column(String(200))
    builtin: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Which tenants may use it: every one, or those of plugin_grants (the same on every
    # version of one plugin id, like ``enabled``).
    available_to_all: Mapped[bool] = mapped_column(default=True, server_default=true())
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH), default=READY)
    status_detail: Mapped[str | None] = mapped_column(Text)
    # Relative to DATA_DIR, the same on every node; a development folder, absolute.
    package_path: Mapped[str] = mapped_column(String(512))
    source_dir: Mapped[str | None] = mapped_column(Text)
    installed_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginGrant(Base):
    """A tenant a plugin is available to, when it is not available to every tenant."""

    __tablename__ = "plugin_grants"

    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginTenantState(Base):
    """A tenant's own switch for an installed plugin (no row: enabled, except a built-in,
    which waits for the tenant's first instance)."""

    __tablename__ = "plugin_tenant_states"

    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LENGTH), primary_key=True)
    enabled: Mapped[bool]
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # While disabled: the tenant's instances this switch turned off (on again with it).
    held_instances: Mapped[list[str]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class HostApproval(Base):
    """The operator's approval of a host-exposing permission (HOST_PERMISSIONS) for a tenant."""

    __tablename__ = "host_approvals"

    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(32), primary_key=True)
    approved_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginArchive(Base):
    """The package of a plugin version, so every node can unpack it (a zip)."""

    __tablename__ = "plugin_archives"

    plugin_version_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("plugins.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PluginInstance(Base):
    """A tenant's configured use of one plugin version."""

    __tablename__ = "plugin_instances"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        Index(None, "tenant_id", "plugin_type"),
        Index(None, "plugin_version_id"),
        Index(None, "next_run_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    plugin_version_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("plugins.id", ondelete="RESTRICT")
    )
    # Copied from the pinned version, for listings and routing without a join.
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LENGTH))
    version: Mapped[str] = mapped_column(String(VERSION_LENGTH))
    plugin_type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # Secret properties encrypted (plugins.configuration.seal), the rest as given.
    config: Mapped[dict[str, Any]]
    # Hook and alert instances: which of the plugin's subscriptions it takes (empty: all).
    event_types: Mapped[list[str]]
    enabled: Mapped[bool] = mapped_column(default=True)
    # Collectors: when the next scheduled run is due (claimed by moving it ahead).
    next_run_at: Mapped[datetime | None]
    last_status: Mapped[str | None] = mapped_column(String(STATUS_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PluginExecution(Base):
    """One run of an instance: what started it, how it ended, what it used."""

    __tablename__ = "plugin_executions"
    __table_args__ = (
        Index(None, "tenant_id", "plugin_id", "started_at"),
        Index(None, "instance_id", "started_at"),
        Index(None, "started_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    # Kept after the instance is deleted, for the plugin's statistics.
    instance_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("plugin_instances.id", ondelete="SET NULL")
    )
    plugin_id: Mapped[str] = mapped_column(String(PLUGIN_ID_LENGTH))
    version: Mapped[str] = mapped_column(String(VERSION_LENGTH))
    trigger: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    # The event a hook or alert ran for (no foreign key: events are pruned before this).
    event_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    started_at: Mapped[datetime]
    duration_ms: Mapped[float]
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    error_class: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    logs: Mapped[str] = mapped_column(Text, default="")
    cpu_ms: Mapped[float | None]
    max_rss_kib: Mapped[int | None]
    metrics: Mapped[list[Any]] = mapped_column(JSON)


class PluginQueueItem(Base):
    """An event waiting for one hook or alert instance; deleted once handled."""

    __tablename__ = "plugin_event_queue"
    __table_args__ = (
        Index(
            "ix_plugin_event_queue_waiting",
            "next_attempt_at",
            postgresql_where=text(QUEUE_WAITING_SQL),
            sqlite_where=text(QUEUE_WAITING_SQL),
        ),
        Index(
            "ix_plugin_event_queue_leased",
            "lease_expires_at",
            postgresql_where=text(QUEUE_LEASED_SQL),
            sqlite_where=text(QUEUE_LEASED_SQL),
        ),
        Index(None, "instance_id"),
        Index(None, "event_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("tenants.id", ondelete="CASCADE")
    )
    instance_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("plugin_instances.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("events.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(TYPE_LENGTH))
    # How many plugin runs led to this event (0: published from outside); bounds chains.
    depth: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PublisherKey(Base):
    """A publisher's public key the operator trusts to sign plugin packages (besides those of
    FORECOURT_PLUGIN_TRUSTED_KEYS); see plugins.publishers."""

    __tablename__ = "plugin_publisher_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # ``ed25519:<base64 of the raw 32 bytes>``, as plugins.integrity writes it.
    public_key: Mapped[str] = mapped_column(String(PUBLIC_KEY_LENGTH))
    # ``SHA256:<base64>`` of the raw key: one row per key, however its base64 was written.
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(32))


class PluginExportCursor(Base):
    """Where a metrics exporter instance's last successful export ended: the time and series
    of the last point it sent, in the order exports read points (``ts``, then series id).
    Written in the run's wake, only when the run succeeded (see plugins/exports.py)."""

    __tablename__ = "plugin_export_cursors"

    instance_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("plugin_instances.id", ondelete="CASCADE"), primary_key=True
    )
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    series_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
