"""The plugins shipped with Forecourt, installed on start.

Each start installs the built-in versions not installed yet (a new release's too), without
unpacking them (that happens on first run) or publishing events. They are installed
disabled, waiting for their first instance, except that the first installation of
``system_info`` also creates an enabled instance of it in the default tenant, so a fresh
installation measures its host from the start. Several nodes starting at once are fine: the
unique (id, version) lets one install each version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from forecourt import principal as principals
from forecourt.errors import Conflict, ForecourtError
from forecourt.plugins.builtin import builtin_package_dirs
from forecourt.plugins.integrity import Trust
from forecourt.plugins.models import Plugin
from forecourt.plugins.package import PluginPackage, read_package
from forecourt.plugins.schemas import InstanceCreate
from forecourt.plugins.store import zip_files
from forecourt.tenants.models import DEFAULT_TENANT_SLUG, Tenant

if TYPE_CHECKING:
    from forecourt.core import Forecourt

log = logging.getLogger("forecourt.plugins")

SYSTEM_INFO = "forecourt.system-info"
SYSTEM_INFO_INSTANCE = "system-info"


async def install_bundled(fc: Forecourt) -> list[Plugin]:
    """Install the built-in versions missing from the database; the ones installed now."""
    packages = await asyncio.to_thread(_read_all)
    async with fc.sessionmaker() as session:
        tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEFAULT_TENANT_SLUG))
        rows = await session.execute(select(Plugin.plugin_id, Plugin.version))
        installed = {(plugin_id, version) for plugin_id, version in rows}
        await session.commit()
    if tenant is None:
        return []
    actor = principals.system(tenant.id)
    added: list[Plugin] = []
    for package in packages:
        manifest = package.manifest
        if (manifest.id, manifest.version) in installed:
            continue
        first = not any(plugin_id == manifest.id for plugin_id, _ in installed)
        async with fc.sessionmaker() as session:
            try:
                plugin = await fc.plugins(session).add(
                    actor,
                    package,
                    zip_files(package.files),
                    Trust(signed=False, publisher=None),
                    builtin=True,
                    announce=False,
                )
            except Conflict:
                continue  # another node installed it at the same moment
            added.append(plugin)
            if manifest.id == SYSTEM_INFO and first:
                await _system_info_instance(fc, actor)
    return added


async def _system_info_instance(fc: Forecourt, actor: principals.Principal) -> None:
    async with fc.sessionmaker() as session:
        try:
            await fc.plugin_instances(session).create(
                actor,
                InstanceCreate(
                    plugin_id=SYSTEM_INFO,
                    name=SYSTEM_INFO_INSTANCE,
                    description="Created on first start: CPU, memory, disk, load and network.",
                ),
            )
        except ForecourtError as exc:
            log.warning("the system_info instance was not created: %s", exc.detail)


def _read_all() -> list[PluginPackage]:
    return [read_package(path) for path in builtin_package_dirs()]
