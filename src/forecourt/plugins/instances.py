"""Plugin instances: a tenant's configured use of one plugin version, and running it.

A configuration is checked against the version's ``config_schema`` whenever it is set or the
instance moves to another version; its secrets are sealed with the server key before they
are stored and read back masked. Creating a tenant's first instance of a built-in plugin
enables it for that tenant alone. A plugin that reaches the host (``host_metrics``,
``unix_sockets``) is used only by tenants the operator approved that for (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound
from forecourt.ids import new_id
from forecourt.pagination import next_cursor, paginate
from forecourt.plugins import policy
from forecourt.plugins.configuration import Box, mask, merge_update, seal, unseal, validate_config
from forecourt.plugins.contracts import validate_input
from forecourt.plugins.manifest import semver_key
from forecourt.plugins.models import (
    EVENT_PLUGIN_TYPES,
    NOT_IN_USE,
    Plugin,
    PluginInstance,
    PluginTenantState,
)
from forecourt.plugins.runner import PluginRunner, Run
from forecourt.plugins.schemas import InstanceCreate, InstanceUpdate
from forecourt.principal import Principal
from forecourt.webhooks.fanout import checked_patterns


def schema_of(plugin: Plugin) -> dict[str, Any]:
    schema: dict[str, Any] = plugin.manifest.get("config_schema") or {}
    return schema


def interval_s(plugin: Plugin) -> int | None:
    """A collector's ``schedule_interval_s``."""
    value = (plugin.manifest.get("permissions") or {}).get("schedule_interval_s")
    return None if value is None else int(value)


def retarget(
    instance: PluginInstance,
    current: Plugin,
    target: Plugin,
    box: Box,
    config: dict[str, Any] | None = None,
) -> None:
    """Pin ``instance`` to ``target`` with ``config`` (default: its own), checked against the
    target's schema first (InvalidInput naming ``config.<field>``) and sealed for it."""
    plain = unseal(instance.config, schema_of(current), box) if config is None else config
    validate_config(schema_of(target), plain)
    instance.config = seal(plain, schema_of(target), box)
    instance.plugin_version_id = target.id
    instance.version = target.version
    instance.updated_at = utcnow()


def masked_config(instance: PluginInstance, plugin: Plugin) -> dict[str, Any]:
    """The configuration as responses show it: secrets as ``********``."""
    return mask(instance.config, schema_of(plugin))


def summary(instance: PluginInstance, plugin: Plugin) -> dict[str, Any]:
    """What the audit log keeps of an instance (secrets masked)."""
    return {
        "name": instance.name,
        "plugin_id": instance.plugin_id,
        "version": instance.version,
        "config": masked_config(instance, plugin),
        "event_types": list(instance.event_types),
        "enabled": instance.enabled,
    }


class InstanceService:
    def __init__(self, session: AsyncSession, runner: PluginRunner) -> None:
        self.session = session
        self.runner = runner
        self.box = runner.box

    async def create(self, actor: Principal, data: InstanceCreate) -> tuple[PluginInstance, Plugin]:
        plugin = await self._version(actor, data.plugin_id, data.version, "plugin_id")
        validate_config(schema_of(plugin), data.config)
        await policy.check_host_approved(self.session, actor.tenant_id, plugin)
        own = await self._own(actor, plugin)
        state = policy.tenant_state(plugin, own)
        first_use = not state.enabled and state.reason == NOT_IN_USE
        # Disabled for the tenant by its admin: the instance is made off, and turned on with
        # the plugin (it is held by the tenant's switch).
        held = data.enabled and own is not None and not own.enabled and plugin.enabled
        if data.enabled and not state.enabled and not first_use and not held:
            raise Conflict(f"The plugin {plugin.plugin_id} is disabled ({state.reason}).")
        now = utcnow()
        every = interval_s(plugin)
        instance = PluginInstance(
            id=new_id("pin"),
            tenant_id=actor.tenant_id,
            plugin_version_id=plugin.id,
            plugin_id=plugin.plugin_id,
            version=plugin.version,
            plugin_type=plugin.type,
            name=data.name,
            description=data.description,
            config=seal(data.config, schema_of(plugin), self.box),
            event_types=_event_types(plugin, data.event_types),
            enabled=data.enabled and not held,
            # The first scheduled run comes one interval after the instance is made.
            next_run_at=None if every is None else now + timedelta(seconds=every),
            last_status=None,
            created_at=now,
            updated_at=now,
        )
        self.session.add(instance)
        if held and own is not None:
            own.held_instances = [*own.held_instances, instance.id]
        if first_use:
            self._enable_unused(actor, plugin)
        audit.record(
            self.session,
            actor,
            "plugin_instance.created",
            "plugin_instance",
            instance.id,
            after=summary(instance, plugin),
        )
        await self._commit(data.name)
        return instance, plugin

    async def page(
        self, actor: Principal, plugin_id: str | None, cursor: str | None, limit: int
    ) -> tuple[list[tuple[PluginInstance, Plugin]], str | None]:
        stmt = select(PluginInstance).where(PluginInstance.tenant_id == actor.tenant_id)
        if plugin_id is not None:
            stmt = stmt.where(PluginInstance.plugin_id == plugin_id)
        rows = (await self.session.scalars(paginate(stmt, PluginInstance.id, cursor, limit))).all()
        page, cursor = next_cursor(rows, limit)
        plugins = await self._plugins({i.plugin_version_id for i in page})
        return [(i, plugins[i.plugin_version_id]) for i in page], cursor

    async def get(self, actor: Principal, ref: str) -> tuple[PluginInstance, Plugin]:
        """By id, or by name (names are unique in a tenant)."""
        instance = await self.session.scalar(
            select(PluginInstance).where(
                PluginInstance.tenant_id == actor.tenant_id,
                (PluginInstance.id == ref) | (PluginInstance.name == ref),
            )
        )
        if instance is None:
            raise NotFound(f"No plugin instance {ref!r}.")
        plugin = await self.session.get(Plugin, instance.plugin_version_id)
        assert plugin is not None  # a foreign key with ON DELETE RESTRICT
        return instance, plugin

    async def update(
        self, actor: Principal, ref: str, data: InstanceUpdate
    ) -> tuple[PluginInstance, Plugin]:
        instance, plugin = await self.get(actor, ref)
        before = summary(instance, plugin)
        fields = data.model_fields_set
        for name in fields - {"description"}:
            if getattr(data, name) is None:
                raise InvalidInput(f"{name} cannot be null.", field=name)
        target = plugin
        if data.version is not None and data.version != plugin.version:
            target = await self._version(actor, plugin.plugin_id, data.version, "version")
        if data.enabled if data.enabled is not None else instance.enabled:
            # It runs after this change: it must be allowed to.
            await policy.check_host_approved(self.session, actor.tenant_id, target)
            if data.enabled and not instance.enabled:
                await self._check_usable(actor, target)
        if data.config is not None or target is not plugin:
            config = None
            if data.config is not None:
                old = unseal(instance.config, schema_of(plugin), self.box)
                config = merge_update(old, data.config, schema_of(target))
            retarget(instance, plugin, target, self.box, config)
        if data.name is not None:
            instance.name = data.name
        if "description" in fields:
            instance.description = data.description or ""
        if data.event_types is not None:
            instance.event_types = _event_types(target, data.event_types)
        if data.enabled is not None:
            instance.enabled = data.enabled
        instance.updated_at = utcnow()
        audit.record(
            self.session,
            actor,
            "plugin_instance.updated",
            "plugin_instance",
            instance.id,
            before=before,
            after=summary(instance, target),
        )
        await self._commit(instance.name)
        return instance, target

    async def delete(self, actor: Principal, ref: str) -> None:
        instance, plugin = await self.get(actor, ref)
        audit.record(
            self.session,
            actor,
            "plugin_instance.deleted",
            "plugin_instance",
            instance.id,
            before=summary(instance, plugin),
        )
        await self.session.delete(instance)
        await self.session.commit()

    async def execute(self, actor: Principal, ref: str, input: Any) -> Run:
        """Run the instance now on ``input`` (checked against its type's contract: 422)."""
        instance, plugin = await self.get(actor, ref)
        await self._check_usable(actor, plugin)
        await policy.check_host_approved(self.session, actor.tenant_id, plugin)
        if not instance.enabled:
            raise Conflict(f"The instance {instance.name!r} is disabled.")
        validate_input(plugin.type, input)
        await self.session.commit()  # hold no connection while the plugin runs
        return await self.runner.run(instance, plugin, input, trigger="api")

    # -- internals -------------------------------------------------------------------------

    async def _version(
        self, actor: Principal, plugin_id: str, version: str | None, field: str
    ) -> Plugin:
        """The version (default: the newest) of a plugin the tenant may use."""
        rows = list(
            (
                await self.session.scalars(
                    select(Plugin).where(
                        Plugin.plugin_id == plugin_id, policy.visible_clause(actor.tenant_id)
                    )
                )
            ).all()
        )
        if not rows:
            raise InvalidInput(f"No plugin {plugin_id!r} is installed.", field=field)
        if version is None:
            return max(rows, key=lambda row: semver_key(row.version))
        for row in rows:
            if row.version == version:
                return row
        listed = ", ".join(sorted((r.version for r in rows), key=semver_key))
        raise InvalidInput(
            f"{plugin_id} {version} is not installed (installed: {listed}).", field="version"
        )

    async def _plugins(self, ids: set[str]) -> dict[str, Plugin]:
        rows = await self.session.scalars(select(Plugin).where(Plugin.id.in_(ids)))
        return {row.id: row for row in rows}

    async def _check_usable(self, actor: Principal, plugin: Plugin) -> None:
        """Conflict unless the plugin is available to the tenant and enabled for it."""
        if not await policy.is_available(self.session, actor.tenant_id, plugin):
            raise Conflict(f"The plugin {plugin.plugin_id} is not available to this tenant.")
        state = policy.tenant_state(plugin, await self._own(actor, plugin))
        if not state.enabled:
            raise Conflict(f"The plugin {plugin.plugin_id} is disabled ({state.reason}).")

    async def _own(self, actor: Principal, plugin: Plugin) -> PluginTenantState | None:
        # No autoflush: a pending instance with a taken name must fail at the commit (409).
        with self.session.no_autoflush:
            return await self.session.get(PluginTenantState, (actor.tenant_id, plugin.plugin_id))

    def _enable_unused(self, actor: Principal, plugin: Plugin) -> None:
        """A built-in waiting for the tenant's first instance gets enabled by it, for this
        tenant alone."""
        self.session.add(
            PluginTenantState(
                tenant_id=actor.tenant_id,
                plugin_id=plugin.plugin_id,
                enabled=True,
                disabled_reason=None,
                held_instances=[],
                updated_at=utcnow(),
            )
        )
        audit.record(
            self.session,
            actor,
            "plugin.enabled",
            "plugin",
            plugin.id,
            after={"plugin_id": plugin.plugin_id, "reason": "its first instance"},
        )

    async def _commit(self, name: str) -> None:
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict(f"An instance named {name!r} exists in this tenant.") from None


def _event_types(plugin: Plugin, patterns: Sequence[str]) -> list[str]:
    if patterns and plugin.type not in EVENT_PLUGIN_TYPES:
        raise InvalidInput("Only hook and alert instances take event types.", field="event_types")
    return checked_patterns(patterns, "alert.triggered")
