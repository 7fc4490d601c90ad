"""REST: /api/v1/plugins and /api/v1/plugin-instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from forecourt import codec
from forecourt.errors import InvalidInput, PayloadTooLarge
from forecourt.http.deps import DbSession, ForecourtDep, Paging, require
from forecourt.http.guard import GuardedRoute
from forecourt.plugins.contracts import TYPES
from forecourt.plugins.instances import masked_config
from forecourt.plugins.models import Plugin, PluginInstance
from forecourt.plugins.policy import TenantState
from forecourt.plugins.publishers import PublisherKeys
from forecourt.plugins.runner import Run
from forecourt.plugins.sandbox.result import Status as ExecutionStatus
from forecourt.plugins.schemas import (
    Availability,
    AvailabilityOut,
    ExecuteRequest,
    ExecutionOut,
    ExecutionResult,
    InstanceCreate,
    InstanceOut,
    InstanceUpdate,
    PluginDetail,
    PluginOut,
    PluginStats,
    PluginTypeOut,
    PluginUpdate,
    PluginUpdated,
    PluginVersionOut,
    PublisherKeyCreate,
    PublisherKeyOut,
    SandboxOut,
)
from forecourt.plugins.service import Installed, PluginService
from forecourt.principal import Principal
from forecourt.schemas import Page
from forecourt.scopes import SYSTEM_ADMIN

PluginsRead = Annotated[Principal, Depends(require("plugins:read"))]
PluginsWrite = Annotated[Principal, Depends(require("plugins:write"))]
PluginsExecute = Annotated[Principal, Depends(require("plugins:execute"))]
Admin = Annotated[Principal, Depends(require("admin"))]
# What spans tenants (packages, their availability, the sandbox): the operator's alone.
Operator = Annotated[Principal, Depends(require(SYSTEM_ADMIN))]
UPLOAD_PATH = "/api/v1/plugins"
UPLOAD_CHUNK_BYTES = 1024 * 1024
# A run's output longer than this is sent in pieces of this size: the server's write buffer
# then never copies megabytes at once.
OUTPUT_CHUNK_BYTES = 1024 * 1024
MULTIPART_ALLOWANCE_BYTES = 64 * 1024  # a multipart body's framing around the package

plugins = APIRouter(route_class=GuardedRoute, prefix="/api/v1/plugins", tags=["plugins"])
instances = APIRouter(
    route_class=GuardedRoute, prefix="/api/v1/plugin-instances", tags=["plugin-instances"]
)


def trust(row: Plugin) -> str:
    if row.builtin:
        return "builtin"
    return "signed" if row.signed else "unsigned"


def plugin_out(found: Installed, state: TenantState) -> dict[str, Any]:
    """A plugin as the caller's tenant sees it: ``enabled`` is whether it runs there."""
    latest = found.latest
    return {
        "id": latest.plugin_id,
        "name": latest.name,
        "description": latest.description,
        "type": latest.type,
        "runtime": latest.runtime,
        "category": latest.category,
        "latest_version": latest.version,
        "versions": [row.version for row in found.versions],
        "enabled": state.enabled,
        "disabled_reason": state.reason,
        "available_to_all": latest.available_to_all,
        "builtin": latest.builtin,
        "signed": latest.signed,
        "trust": trust(latest),
        "permissions": latest.manifest.get("permissions") or {},
        "resources": latest.manifest.get("resources") or {},
        "installed_at": found.versions[0].installed_at,
    }


def version_out(row: Plugin) -> PluginVersionOut:
    return PluginVersionOut(
        version=row.version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        signed=row.signed,
        publisher=row.publisher,
        trust=trust(row),
        status=row.status,
        status_detail=row.status_detail,
        development_dir=row.source_dir,
        installed_at=row.installed_at,
        updated_at=row.updated_at,
    )


async def detail(service: PluginService, actor: Principal, found: Installed) -> dict[str, Any]:
    states = await service.states(actor, [found])
    return {
        **plugin_out(found, states[found.plugin_id]),
        "manifest": found.latest.manifest,
        "version_details": [version_out(row) for row in found.versions],
        "instances": await service.instance_count(actor, found.plugin_id),
        "stats": await service.stats(actor, found.plugin_id),
    }


def instance_out(instance: PluginInstance, plugin: Plugin) -> InstanceOut:
    return InstanceOut(
        id=instance.id,
        plugin_id=instance.plugin_id,
        version=instance.version,
        plugin_type=instance.plugin_type,
        name=instance.name,
        description=instance.description,
        config=masked_config(instance, plugin),
        event_types=list(instance.event_types),
        enabled=instance.enabled,
        signed=plugin.signed,
        trust=trust(plugin),
        next_run_at=instance.next_run_at,
        last_status=instance.last_status,
        created_at=instance.created_at,
        updated_at=instance.updated_at,
    )


def run_response(run: Run) -> Response:
    """A run as :class:`ExecutionResult`'s JSON, written around the output's bytes as the
    run's check encoded them: an output of megabytes is neither decoded nor encoded here."""
    fields = codec.dumps_stored(ExecutionOut.model_validate(run.execution).model_dump(mode="json"))
    head = fields[:-1] + b',"output":'
    output = b"null" if run.output_json is None else run.output_json
    if len(output) <= OUTPUT_CHUNK_BYTES:
        return Response(head + output + b"}", media_type="application/json")

    async def pieces() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, len(output), OUTPUT_CHUNK_BYTES):
            yield output[start : start + OUTPUT_CHUNK_BYTES]
        yield b"}"

    length = str(len(head) + len(output) + 1)
    return StreamingResponse(
        pieces(), media_type="application/json", headers={"content-length": length}
    )


# -- /api/v1/plugins -------------------------------------------------------------------------


@plugins.get("/types", response_model=list[PluginTypeOut])
async def plugin_types(actor: PluginsRead) -> list[PluginTypeOut]:
    """Each plugin type: what starts a run, and the JSON Schemas of its input and output."""
    return [PluginTypeOut.model_validate(info.as_dict()) for info in TYPES.values()]


@plugins.get("/sandbox", response_model=SandboxOut)
async def sandbox(actor: Operator, fc: ForecourtDep) -> SandboxOut:
    """The protections plugin workers get on this host, and the admin's choice when some are
    missing (FORECOURT_PLUGIN_SANDBOX_REQUIRE)."""
    report = await asyncio.to_thread(fc.plugin_runner.report)
    found = report.to_dict()
    require = fc.settings.plugin_sandbox_require
    return SandboxOut(
        require=require,
        runs_plugins=report.complete or require == "available",
        complete=report.complete,
        missing=list(report.missing),
        uid=fc.settings.plugin_sandbox_uid,
        protections=found["protections"],
    )


# /publisher-keys before /{plugin_id}: a literal path, not a plugin's id.
@plugins.get("/publisher-keys", response_model=Page[PublisherKeyOut])
async def list_publisher_keys(
    actor: Operator, fc: ForecourtDep, session: DbSession
) -> Page[PublisherKeyOut]:
    """The publisher keys whose signatures this installation trusts, all in one page: those of
    FORECOURT_PLUGIN_TRUSTED_KEYS (``source: configuration``), then those added here."""
    found = await PublisherKeys(session, fc.settings).list()
    return Page[PublisherKeyOut](
        items=[PublisherKeyOut.model_validate(key, from_attributes=True) for key in found],
        next_cursor=None,
    )


@plugins.post(
    "/publisher-keys", status_code=status.HTTP_201_CREATED, response_model=PublisherKeyOut
)
async def add_publisher_key(
    body: PublisherKeyCreate, actor: Operator, fc: ForecourtDep, session: DbSession
) -> PublisherKeyOut:
    """Trust a publisher's key: packages it signed install from now on (the operator's
    alone; every tenant's audit log records it). A key trusted already is 409."""
    key = await PublisherKeys(session, fc.settings).add(actor, body.name, body.public_key)
    return PublisherKeyOut.model_validate(key, from_attributes=True)


@plugins.delete("/publisher-keys/{publisher_key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_publisher_key(
    publisher_key_id: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> None:
    """Stop trusting a key added here (those of the configuration change only there);
    versions it signed stay installed."""
    await PublisherKeys(session, fc.settings).remove(actor, publisher_key_id)


@plugins.post("", status_code=status.HTTP_201_CREATED, response_model=PluginDetail)
async def install_plugin(
    actor: Operator,
    fc: ForecourtDep,
    session: DbSession,
    package: Annotated[UploadFile, File(description="The package: a .zip of at most 10 MiB.")],
) -> dict[str, Any]:
    """Install a package, or a new version of one (multipart field ``package``); the
    operator's alone. Every manifest problem is reported at once (422); an id and version
    already installed is 409; over the size cap, 413."""
    cap = fc.settings.plugin_max_package_bytes
    chunks: list[bytes] = []
    size = 0
    while chunk := await package.read(UPLOAD_CHUNK_BYTES):
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"The package is over the limit of {cap} bytes")
        chunks.append(chunk)
    if not size:
        raise InvalidInput("The package is empty.", field="package")
    service = fc.plugins(session)
    row = await service.install(actor, b"".join(chunks))
    return await detail(service, actor, await service.get(row.plugin_id))


@plugins.get("", response_model=Page[PluginOut])
async def list_plugins(
    actor: PluginsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    type: Annotated[str | None, Query(description="transformation, export, ...")] = None,
    enabled: bool | None = None,
    category: str | None = None,
) -> Page[PluginOut]:
    """The plugins available to your tenant; ``enabled``: whether they run for it."""
    service = fc.plugins(session)
    found, cursor = await service.page(
        actor, type=type, enabled=enabled, category=category, cursor=page.cursor, limit=page.limit
    )
    states = await service.states(actor, found)
    items = [PluginOut(**plugin_out(f, states[f.plugin_id])) for f in found]
    return Page[PluginOut](items=items, next_cursor=cursor)


@plugins.get("/{plugin_id}", response_model=PluginDetail)
async def get_plugin(
    plugin_id: str, actor: PluginsRead, fc: ForecourtDep, session: DbSession
) -> dict[str, Any]:
    """The latest manifest, every installed version, status, and your tenant's statistics."""
    service = fc.plugins(session)
    return await detail(service, actor, await service.get(plugin_id, actor))


@plugins.patch("/{plugin_id}", response_model=PluginUpdated)
async def update_plugin(
    plugin_id: str, body: PluginUpdate, actor: Admin, fc: ForecourtDep, session: DbSession
) -> dict[str, Any]:
    """Enable or disable it for your tenant alone (disabling also disables your instances of
    it); move your tenant's instances to a newer version."""
    service = fc.plugins(session)
    found, upgraded = await service.update(actor, plugin_id, body)
    return {**await detail(service, actor, found), "upgraded_instances": upgraded}


@plugins.delete("/{plugin_id}", status_code=status.HTTP_204_NO_CONTENT)
async def uninstall_plugin(
    plugin_id: str,
    actor: Operator,
    fc: ForecourtDep,
    session: DbSession,
    version: Annotated[str | None, Query(description="One version; default: all.")] = None,
    force: Annotated[bool, Query(description="Also delete the instances using it.")] = False,
) -> None:
    """Uninstall (the operator's alone); refused (409) while instances of any tenant use it,
    unless ``force``."""
    await fc.plugins(session).uninstall(actor, plugin_id, version, force=force)


def _availability_out(plugin_id: str, found: tuple[bool, list[Any]]) -> AvailabilityOut:
    everyone, tenants = found
    return AvailabilityOut(
        plugin_id=plugin_id, all_tenants=everyone, tenants=[t.slug for t in tenants]
    )


@plugins.get("/{plugin_id}/availability", response_model=AvailabilityOut)
async def get_availability(
    plugin_id: str, actor: Operator, fc: ForecourtDep, session: DbSession
) -> AvailabilityOut:
    """The tenants that may use the plugin: all, or those listed (the operator's alone)."""
    service = fc.plugins(session)
    return _availability_out(plugin_id, await service.availability(plugin_id))


@plugins.put("/{plugin_id}/availability", response_model=AvailabilityOut)
async def set_availability(
    plugin_id: str, body: Availability, actor: Operator, fc: ForecourtDep, session: DbSession
) -> AvailabilityOut:
    """Make the plugin available to every tenant, or to the tenants listed (ids or slugs);
    a tenant that loses it has its instances of it disabled. Each tenant affected finds the
    change in its audit log, made by "operator"."""
    service = fc.plugins(session)
    found = await service.set_availability(actor, plugin_id, body.all_tenants, body.tenants)
    return _availability_out(plugin_id, found)


@plugins.get("/{plugin_id}/stats", response_model=PluginStats)
async def plugin_stats(
    plugin_id: str, actor: PluginsRead, fc: ForecourtDep, session: DbSession
) -> dict[str, Any]:
    """Your tenant's runs over 1 h, 24 h and 7 d: count, error rate, p50/p95 duration."""
    return await fc.plugins(session).stats(actor, plugin_id)


@plugins.get("/{plugin_id}/executions", response_model=Page[ExecutionOut])
async def plugin_executions(
    plugin_id: str,
    actor: PluginsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    status: Annotated[
        str | None,
        Query(
            description="ok, error, timeout, ...",
            json_schema_extra={"enum": list(get_args(ExecutionStatus))},
        ),
    ] = None,
    instance_id: str | None = None,
) -> Page[ExecutionOut]:
    rows, cursor = await fc.plugins(session).executions(
        actor,
        plugin_id,
        status=status,
        instance_id=instance_id,
        cursor=page.cursor,
        limit=page.limit,
    )
    return Page[ExecutionOut](
        items=[ExecutionOut.model_validate(r) for r in rows], next_cursor=cursor
    )


# -- /api/v1/plugin-instances ----------------------------------------------------------------


@instances.post("", status_code=status.HTTP_201_CREATED, response_model=InstanceOut)
async def create_instance(
    body: InstanceCreate, actor: PluginsWrite, fc: ForecourtDep, session: DbSession
) -> InstanceOut:
    """Configure a plugin for your tenant; the configuration is checked against its schema."""
    return instance_out(*await fc.plugin_instances(session).create(actor, body))


@instances.get("", response_model=Page[InstanceOut])
async def list_instances(
    actor: PluginsRead,
    fc: ForecourtDep,
    session: DbSession,
    page: Paging,
    plugin_id: str | None = None,
) -> Page[InstanceOut]:
    rows, cursor = await fc.plugin_instances(session).page(
        actor, plugin_id, page.cursor, page.limit
    )
    return Page[InstanceOut](items=[instance_out(i, p) for i, p in rows], next_cursor=cursor)


@instances.get("/{instance_id}", response_model=InstanceOut)
async def get_instance(
    instance_id: str, actor: PluginsRead, fc: ForecourtDep, session: DbSession
) -> InstanceOut:
    return instance_out(*await fc.plugin_instances(session).get(actor, instance_id))


@instances.patch("/{instance_id}", response_model=InstanceOut)
async def update_instance(
    instance_id: str,
    body: InstanceUpdate,
    actor: PluginsWrite,
    fc: ForecourtDep,
    session: DbSession,
) -> InstanceOut:
    """Change it; a new version or configuration is checked against the schema first."""
    return instance_out(*await fc.plugin_instances(session).update(actor, instance_id, body))


@instances.delete("/{instance_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_instance(
    instance_id: str, actor: PluginsWrite, fc: ForecourtDep, session: DbSession
) -> None:
    await fc.plugin_instances(session).delete(actor, instance_id)


@instances.post("/{instance_id}/execute", response_model=ExecutionResult)
async def execute_instance(
    instance_id: str,
    actor: PluginsExecute,
    fc: ForecourtDep,
    session: DbSession,
    body: ExecuteRequest | None = None,
) -> Response:
    """Run it now in the sandbox: output, logs, duration and status. A plugin that fails is
    still a 200 with its status (error, timeout, killed, refused); a bad input is a 422."""
    given = body or ExecuteRequest()
    return run_response(await fc.plugin_instances(session).execute(actor, instance_id, given.input))
