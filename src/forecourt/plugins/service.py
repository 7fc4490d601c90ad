"""Installed plugins: install, list, inspect, enable and disable, upgrade, uninstall; the record
of their runs and statistics.

Plugins belong to the installation: its operator (``system:admin``) installs, upgrades and
uninstalls them and chooses the tenants they are available to (all, or a list); every such
change is written to the log of each tenant it affects, naming the actor "operator". Each
tenant's admin enables or disables an available plugin for that tenant alone (disabling also
disables the tenant's instances of it). Instances, executions and statistics belong to a
tenant. A plugin id may have several versions installed side by side; they share the
installation's switch and availability.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, not_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from forecourt.audit import service as audit
from forecourt.db.base import utcnow
from forecourt.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from forecourt.events.outbox import OnPublished
from forecourt.events.service import emit
from forecourt.ids import new_id
from forecourt.pagination import decode_key, encode_cursor
from forecourt.plugins import executions as records
from forecourt.plugins import instances as instance_rules
from forecourt.plugins import policy, publishers
from forecourt.plugins.integrity import Trust
from forecourt.plugins.manifest import semver_key
from forecourt.plugins.models import (
    READY,
    HostApproval,
    Plugin,
    PluginArchive,
    PluginExecution,
    PluginGrant,
    PluginInstance,
    PluginTenantState,
)
from forecourt.plugins.package import PluginPackage, read_package
from forecourt.plugins.policy import check_package
from forecourt.plugins.runner import PluginRunner
from forecourt.plugins.schemas import PluginUpdate
from forecourt.plugins.store import zip_files
from forecourt.principal import Principal
from forecourt.scopes import SYSTEM_ADMIN
from forecourt.tenants import service as tenants
from forecourt.tenants.models import Tenant


def package_columns(package: PluginPackage) -> dict[str, Any]:
    """The columns of a version's row that come from its package (and change with it when a
    development folder is edited)."""
    manifest = package.manifest
    return {
        "name": manifest.name,
        "description": manifest.description,
        "category": manifest.category,
        "manifest": manifest.raw,
        "event_types": list(manifest.permissions.events),
        "sha256": package.sha256,
        "size_bytes": package.size,
    }


@dataclass(frozen=True)
class Installed:
    """Every installed version of one plugin id, oldest first."""

    versions: list[Plugin]

    @property
    def latest(self) -> Plugin:
        return self.versions[-1]

    @property
    def plugin_id(self) -> str:
        return self.latest.plugin_id


def summary(plugin: Plugin) -> dict[str, Any]:
    """What the audit log and events keep of an installed version."""
    return {
        "plugin_id": plugin.plugin_id,
        "version": plugin.version,
        "type": plugin.type,
        "sha256": plugin.sha256,
        "signed": plugin.signed,
        "publisher": plugin.publisher,
        "builtin": plugin.builtin,
        "enabled": plugin.enabled,
    }


class PluginService:
    def __init__(
        self, session: AsyncSession, runner: PluginRunner, on_published: OnPublished | None
    ) -> None:
        self.session = session
        self.runner = runner
        self.settings = runner.settings
        self.on_published = on_published

    # -- installing ------------------------------------------------------------------------

    async def install(self, actor: Principal, source: bytes | Path, *, dev: bool = False) -> Plugin:
        """Install a zip (bytes or a file) or a folder; ``dev``: a folder, watched for edits."""
        cap = self.settings.plugin_max_package_bytes
        if isinstance(source, bytes) and len(source) > cap:
            raise PayloadTooLarge(f"The package is {len(source)} bytes; the limit is {cap}")
        package = await asyncio.to_thread(read_package, source, max_bytes=cap)
        trusted = await publishers.trusted_keys(self.session, self.settings)
        trust = check_package(package, self.settings, trusted)
        archive, source_dir = await asyncio.to_thread(_archive, source, package, dev)
        return await self.add(actor, package, archive, trust, source_dir=source_dir)

    async def add(
        self,
        actor: Principal,
        package: PluginPackage,
        archive: bytes,
        trust: Trust,
        *,
        builtin: bool = False,
        source_dir: str | None = None,
        announce: bool = True,
    ) -> Plugin:
        """Record a checked package as installed, its files unpacked (built-ins: on first run)."""
        manifest = package.manifest
        others = await self._rows(manifest.id)
        if any(row.version == manifest.version for row in others):
            raise Conflict(f"{manifest.id} {manifest.version} is already installed.")
        if others and others[-1].type != manifest.type:
            raise Conflict(
                f"Installed versions of {manifest.id} are {others[-1].type} plugins; "
                f"a new version cannot be a {manifest.type}."
            )
        enabled = others[-1].enabled if others else True
        store = self.runner.store
        if not builtin:
            await store.unpack(package, package.sha256)  # DependencyInstallFailed: nothing left
        now = utcnow()
        plugin = Plugin(
            id=new_id("plg"),
            plugin_id=manifest.id,
            version=manifest.version,
            type=manifest.type,
            runtime=manifest.runtime,
            **package_columns(package),
            signed=trust.signed,
            publisher="Forecourt" if builtin else trust.publisher,
            builtin=builtin,
            enabled=enabled,
            disabled_reason=None if enabled else others[-1].disabled_reason,
            available_to_all=others[-1].available_to_all if others else True,
            status=READY,
            package_path=store.relative(manifest.id, manifest.version),
            source_dir=source_dir,
            installed_at=now,
            updated_at=now,
        )
        self.session.add(plugin)
        self.session.add(PluginArchive(plugin_version_id=plugin.id, data=archive))
        audit.record(
            self.session, actor, "plugin.installed", "plugin", plugin.id, after=summary(plugin)
        )
        if not builtin:  # built-ins come with the release, not from anyone
            audit.record_operator(
                self.session,
                "plugin.installed",
                "plugin",
                plugin.id,
                await self._with_access(plugin),
                after=summary(plugin),
                skip=actor.tenant_id,
            )
        if announce:
            await self._announce(actor, "plugin.installed", plugin)
        try:
            await self.session.commit()
        except IntegrityError:
            await self.session.rollback()
            raise Conflict(f"{manifest.id} {manifest.version} is already installed.") from None
        except BaseException:
            await self.session.rollback()
            store.remove(manifest.id, manifest.version)
            raise
        await self.runner.reload(manifest.id, manifest.version)
        return plugin

    # -- reading ---------------------------------------------------------------------------

    async def page(
        self,
        actor: Principal,
        *,
        type: str | None,
        enabled: bool | None,
        category: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[Installed], str | None]:
        """Installed plugins the caller's tenant may use (the operator: every one) by id, each
        with every version; filters apply to the plugin, ``enabled`` as the tenant sees it."""
        stmt = select(Plugin.plugin_id).distinct()
        if SYSTEM_ADMIN not in actor.scopes:
            stmt = stmt.where(policy.visible_clause(actor.tenant_id))
        if type is not None:
            stmt = stmt.where(Plugin.type == type)
        if category is not None:
            stmt = stmt.where(Plugin.category == category)
        if enabled is not None:
            on = policy.enabled_clause(actor.tenant_id)
            stmt = stmt.where(on if enabled else not_(on))
        if cursor:
            stmt = stmt.where(Plugin.plugin_id > decode_key(cursor))
        ids = list(
            (await self.session.scalars(stmt.order_by(Plugin.plugin_id).limit(limit + 1))).all()
        )
        more = len(ids) > limit
        ids = ids[:limit]
        rows = (await self.session.scalars(select(Plugin).where(Plugin.plugin_id.in_(ids)))).all()
        found = [Installed(_sorted([r for r in rows if r.plugin_id == pid])) for pid in ids]
        return found, (encode_cursor(ids[-1]) if more and ids else None)

    async def get(self, plugin_id: str, actor: Principal | None = None) -> Installed:
        """Every version of ``plugin_id``; with ``actor``, only if its tenant may use it (the
        operator sees every plugin)."""
        rows = await self._rows(plugin_id)
        if not rows or (
            actor is not None
            and SYSTEM_ADMIN not in actor.scopes
            and not await policy.is_available(self.session, actor.tenant_id, rows[-1])
        ):
            raise NotFound(f"No plugin {plugin_id!r} is installed.")
        return Installed(rows)

    async def states(
        self, actor: Principal, found: list[Installed]
    ) -> dict[str, policy.TenantState]:
        """Whether each plugin runs for the caller's tenant, and why not."""
        own = await policy.own_states(self.session, actor.tenant_id, [f.plugin_id for f in found])
        return {f.plugin_id: policy.tenant_state(f.latest, own.get(f.plugin_id)) for f in found}

    async def availability(self, plugin_id: str) -> tuple[bool, list[Tenant]]:
        """Available to every tenant, or to the tenants listed."""
        installed = await self.get(plugin_id)
        granted = await self.session.scalars(
            select(Tenant)
            .join(PluginGrant, PluginGrant.tenant_id == Tenant.id)
            .where(PluginGrant.plugin_id == plugin_id)
            .order_by(Tenant.slug)
        )
        return installed.latest.available_to_all, list(granted.all())

    async def set_availability(
        self, actor: Principal, plugin_id: str, all_tenants: bool, refs: list[str]
    ) -> tuple[bool, list[Tenant]]:
        """The operator's choice: every tenant, or those of ``refs`` (ids or slugs). Tenants
        that lose the plugin have their instances of it disabled."""
        installed = await self.get(plugin_id)
        wanted: dict[str, Tenant] = {}
        for index, ref in enumerate(refs):
            found = await tenants.find(self.session, ref)
            if found is None:
                raise InvalidInput(f"No tenant {ref!r}.", field=f"tenants.{index}")
            wanted[found.id] = found
        if all_tenants and wanted:
            raise InvalidInput("List tenants only when it is not for all.", field="tenants")
        before_ids = set(await self._with_access(installed.latest))
        after_ids = set(await tenants.all_ids(self.session)) if all_tenants else set(wanted)
        before = {
            "available_to_all": installed.latest.available_to_all,
            "tenants": sorted(before_ids),
        }
        for row in installed.versions:
            row.available_to_all, row.updated_at = all_tenants, utcnow()
        await self.session.execute(delete(PluginGrant).where(PluginGrant.plugin_id == plugin_id))
        for tenant_id in wanted:  # none when it is for all (refused above)
            self.session.add(
                PluginGrant(plugin_id=plugin_id, tenant_id=tenant_id, created_at=utcnow())
            )
        lost = before_ids - after_ids
        if lost:
            await self._disable_instances(
                actor,
                plugin_id,
                lost,
                "plugin_instance.disabled",
                "the plugin is no longer available",
            )
        after = {"available_to_all": all_tenants, "tenants": sorted(after_ids)}
        audit.record(
            self.session,
            actor,
            "plugin.availability_changed",
            "plugin",
            installed.latest.id,
            before=before,
            after=after,
        )
        for tenant_id in (before_ids | after_ids) - {actor.tenant_id}:
            audit.record_operator(
                self.session,
                "plugin.availability_changed",
                "plugin",
                installed.latest.id,
                [tenant_id],
                before={"available": tenant_id in before_ids},
                after={"available": tenant_id in after_ids},
            )
        await self.session.commit()
        return all_tenants, sorted(wanted.values(), key=lambda t: t.slug)

    async def instance_count(self, actor: Principal, plugin_id: str) -> int:
        count = await self.session.scalar(
            select(func.count())
            .select_from(PluginInstance)
            .where(
                PluginInstance.tenant_id == actor.tenant_id, PluginInstance.plugin_id == plugin_id
            )
        )
        return int(count or 0)

    # -- changing --------------------------------------------------------------------------

    async def update(
        self, actor: Principal, plugin_id: str, data: PluginUpdate
    ) -> tuple[Installed, list[str]]:
        """Enable or disable the plugin for the caller's tenant alone (disabling also disables
        the tenant's instances of it); move the tenant's instances to ``upgrade_to``."""
        installed = await self.get(plugin_id, actor)
        upgraded: list[str] = []
        if data.enabled is not None:
            await self.set_tenant_enabled(actor, installed, data.enabled)
        if data.upgrade_to is not None:
            upgraded = await self._upgrade(actor, installed, data.upgrade_to)
        await self.session.commit()
        return installed, upgraded

    async def set_tenant_enabled(
        self, actor: Principal, installed: Installed, enabled: bool, *, reason: str | None = None
    ) -> None:
        """The tenant's own switch (no commit); its log alone records it. Disabling turns the
        tenant's instances of it off (so neither events nor schedules run them) and enabling
        turns those back on."""
        plugin_id = installed.plugin_id
        own = await self.session.get(PluginTenantState, (actor.tenant_id, plugin_id))
        state = policy.tenant_state(installed.latest, own)
        if own is not None and own.enabled == enabled:
            return
        if own is None:
            own = PluginTenantState(tenant_id=actor.tenant_id, plugin_id=plugin_id)
            self.session.add(own)
        own.enabled, own.updated_at = enabled, utcnow()
        own.disabled_reason = None if enabled else reason or _by(actor)
        audit.record(
            self.session,
            actor,
            "plugin.enabled" if enabled else "plugin.disabled",
            "plugin",
            installed.latest.id,
            before={"plugin_id": plugin_id, "enabled": state.enabled},
            after={"plugin_id": plugin_id, "enabled": enabled, "reason": own.disabled_reason},
        )
        if not enabled:
            own.held_instances = await self._disable_instances(
                actor,
                plugin_id,
                {actor.tenant_id},
                "plugin_instance.disabled",
                "the plugin was disabled for this tenant",
            )
            return
        held, own.held_instances = list(own.held_instances or ()), []
        if held:
            found = await self.session.scalars(
                select(PluginInstance).where(
                    PluginInstance.id.in_(held),
                    PluginInstance.tenant_id == actor.tenant_id,
                    PluginInstance.enabled.is_(False),
                )
            )
            for instance in found.all():
                instance.enabled, instance.updated_at = True, utcnow()
                audit.record(
                    self.session,
                    actor,
                    "plugin_instance.enabled",
                    "plugin_instance",
                    instance.id,
                    before={"enabled": False},
                    after={"enabled": True, "reason": "the plugin was enabled for this tenant"},
                )

    async def set_host_approval(
        self, actor: Principal, tenant: Tenant, permission: str, approved: bool
    ) -> list[str]:
        """The operator approves (or revokes) a host permission for ``tenant``; a revocation
        disables the tenant's instances of the plugins that use it. The approvals now."""
        held = await policy.approvals(self.session, tenant.id)
        if approved and permission not in held:
            await policy.approve_host_permissions(self.session, tenant.id, [permission])
        elif not approved and permission in held:
            await self.session.execute(
                delete(HostApproval).where(
                    HostApproval.tenant_id == tenant.id, HostApproval.permission == permission
                )
            )
            rows = await self.session.scalars(select(Plugin))
            users = {r.plugin_id for r in rows.all() if permission in policy.host_permissions(r)}
            for plugin_id in sorted(users):
                await self._disable_instances(
                    actor,
                    plugin_id,
                    {tenant.id},
                    "plugin_instance.disabled",
                    f"{permission} is no longer approved for this tenant",
                )
        else:
            return sorted(held)
        action = "host_permission.approved" if approved else "host_permission.revoked"
        after = {"permission": permission, "tenant": tenant.slug}
        audit.record(self.session, actor, action, "tenant", tenant.id, after=after)
        audit.record_operator(
            self.session,
            action,
            "tenant",
            tenant.id,
            [tenant.id],
            skip=actor.tenant_id,
            after=after,
        )
        await self.session.commit()
        return sorted(await policy.approvals(self.session, tenant.id))

    async def _disable_instances(
        self, actor: Principal, plugin_id: str, tenant_ids: set[str], action: str, why: str
    ) -> list[str]:
        """Disable the enabled instances of ``plugin_id`` in ``tenant_ids`` (so neither events
        nor schedules run them), each change in its tenant's log; their ids."""
        found = await self.session.scalars(
            select(PluginInstance).where(
                PluginInstance.plugin_id == plugin_id,
                PluginInstance.tenant_id.in_(tenant_ids),
                PluginInstance.enabled.is_(True),
            )
        )
        ids = []
        for instance in found.all():
            ids.append(instance.id)
            instance.enabled, instance.updated_at = False, utcnow()
            before: dict[str, Any] = {"enabled": True}
            after: dict[str, Any] = {"enabled": False, "reason": why}
            if instance.tenant_id == actor.tenant_id:
                audit.record(
                    self.session,
                    actor,
                    action,
                    "plugin_instance",
                    instance.id,
                    before=before,
                    after=after,
                )
            else:
                audit.record_operator(
                    self.session,
                    action,
                    "plugin_instance",
                    instance.id,
                    [instance.tenant_id],
                    before=before,
                    after=after,
                )
        return ids

    async def _upgrade(self, actor: Principal, installed: Installed, version: str) -> list[str]:
        target = next((r for r in installed.versions if r.version == version), None)
        if target is None:
            raise InvalidInput(
                f"{installed.plugin_id} {version} is not installed.", field="upgrade_to"
            )
        # The target may reach the host where the tenant's versions did not.
        await policy.check_host_approved(self.session, actor.tenant_id, target)
        by_id = {row.id: row for row in installed.versions}
        found = await self.session.scalars(
            select(PluginInstance).where(
                PluginInstance.tenant_id == actor.tenant_id,
                PluginInstance.plugin_id == installed.plugin_id,
            )
        )
        moved = []
        for instance in found:
            if semver_key(instance.version) >= semver_key(target.version):
                continue
            try:
                instance_rules.retarget(
                    instance, by_id[instance.plugin_version_id], target, self.runner.box
                )
            except InvalidInput as exc:
                name, instance_id = instance.name, instance.id
                await self.session.rollback()
                raise InvalidInput(
                    f"Instance {name!r} cannot move to {version}: {exc.detail}",
                    field=f"instances.{instance_id}.{exc.field}",
                    instance_id=instance_id,
                ) from None
            audit.record(
                self.session,
                actor,
                "plugin_instance.upgraded",
                "plugin_instance",
                instance.id,
                after={"version": target.version},
            )
            moved.append(instance.id)
        return moved

    async def uninstall(
        self, actor: Principal, plugin_id: str, version: str | None, *, force: bool
    ) -> list[Plugin]:
        """Remove one version (or all); refused while instances use it, unless ``force``
        (which deletes those instances, in every tenant)."""
        installed = await self.get(plugin_id)
        rows = [r for r in installed.versions if version is None or r.version == version]
        if not rows:
            raise NotFound(f"{plugin_id} {version} is not installed.")
        if any(row.builtin for row in rows):
            raise Conflict("Built-in plugins cannot be uninstalled; disable them instead.")
        ids = [row.id for row in rows]
        users = select(PluginInstance.id, PluginInstance.tenant_id).where(
            PluginInstance.plugin_version_id.in_(ids)
        )
        using = (await self.session.execute(users)).all()
        in_use = [instance_id for instance_id, _ in using]
        affected = [*await self._with_access(installed.latest), *(t for _, t in using)]
        if in_use and not force:
            raise Conflict(
                f"{len(in_use)} instance(s) use this plugin; delete them, upgrade them to another "
                "version, or uninstall with force=true.",
                instances=len(in_use),
            )
        if in_use:
            await self.session.execute(delete(PluginInstance).where(PluginInstance.id.in_(in_use)))
        for row in rows:
            after = {"instances_deleted": len(in_use)}
            audit.record(
                self.session,
                actor,
                "plugin.uninstalled",
                "plugin",
                row.id,
                before=summary(row),
                after=after,
            )
            audit.record_operator(
                self.session,
                "plugin.uninstalled",
                "plugin",
                row.id,
                affected,
                before=summary(row),
                skip=actor.tenant_id,
            )
            await self._announce(actor, "plugin.uninstalled", row)
        await self.session.execute(delete(Plugin).where(Plugin.id.in_(ids)))
        await self.session.commit()
        for row in rows:
            await self.runner.forget(row.plugin_id, row.version)
            self.runner.store.remove(row.plugin_id, row.version)
        return rows

    # -- runs ------------------------------------------------------------------------------

    async def executions(
        self,
        actor: Principal,
        plugin_id: str,
        *,
        status: str | None,
        instance_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[PluginExecution], str | None]:
        """The tenant's runs of ``plugin_id`` (every version), newest first."""
        await self.get(plugin_id, actor)
        return await records.page(
            self.session, actor.tenant_id, plugin_id, status, instance_id, cursor, limit
        )

    async def stats(self, actor: Principal, plugin_id: str) -> dict[str, Any]:
        """The tenant's runs of ``plugin_id`` over 1 h, 24 h and 7 d."""
        await self.get(plugin_id, actor)
        return await records.stats(self.session, actor.tenant_id, plugin_id)

    # -- internals -------------------------------------------------------------------------

    async def _with_access(self, plugin: Plugin) -> list[str]:
        """The tenants that may use ``plugin`` (whom a change of its package affects)."""
        if plugin.available_to_all:
            return await tenants.all_ids(self.session)
        return await policy.grantees(self.session, plugin.plugin_id)

    async def _rows(self, plugin_id: str) -> list[Plugin]:
        rows = await self.session.scalars(select(Plugin).where(Plugin.plugin_id == plugin_id))
        return _sorted(list(rows.all()))

    async def _announce(self, actor: Principal, kind: str, plugin: Plugin) -> None:
        await emit(
            self.session,
            actor.tenant_id,
            kind,
            summary(plugin),
            plugin.plugin_id,
            hook=self.on_published,
        )


def _archive(source: bytes | Path, package: PluginPackage, dev: bool) -> tuple[bytes, str | None]:
    """The zip to store for ``source``, and the development folder to watch, if any."""
    if isinstance(source, bytes):
        return source, None
    if source.is_dir():
        return zip_files(package.files), str(source.resolve()) if dev else None
    return source.read_bytes(), None


def _by(actor: Principal) -> str:
    return f"disabled by {actor.actor_type} {actor.actor_id or ''}".strip()


def _sorted(rows: list[Plugin]) -> list[Plugin]:
    return sorted(rows, key=lambda row: semver_key(row.version))
